"""`assistant sleep`: probes and checks, the commit-then-shred order, crash safety, the lock.

The runner is driven on the tiny random Llama. Its answers are noise, so the
tests that need a commit lower the verification thresholds in the config file:
they check the machinery (what is kept, committed, shredded, left behind), not
what the model learns, which the recall benchmark judges on the starter model.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.sleep.probes import (
    GENERIC_PROBES,
    chunk_notes,
    day_notes,
    parse_questions,
    split_probes,
)
from assistant.sleep.verify import Thresholds, agreement, answers_agree, judge
from assistant.store.memory import Turn

CANARIES = ("My goldfish is called Zorblax-4417.", "I live in Quixotic Harbour 9921.")
# Small enough to run in seconds on the tiny model; thresholds that always pass.
FAST = {"sleep_steps": 4, "sleep_max_answer_tokens": 8}
ALWAYS_PASS = {**FAST, "sleep_min_recall": 0.0, "sleep_max_anchor_divergence": 1e9}


def _turn(i: int, role: str, text: str) -> Turn:
    return Turn(i, 1, 1, role, text, "")


def test_day_notes_keep_the_latest_position_of_a_repeat() -> None:
    turns = [
        _turn(1, "user", "I live in Oslo."),
        _turn(2, "assistant", "Got it."),
        _turn(3, "user", "I moved to Lima."),
        _turn(4, "user", " I live in Oslo. "),
    ]
    assert day_notes(turns) == ["I moved to Lima.", "I live in Oslo."]


def test_chunks_stay_in_order_and_fit() -> None:
    notes = ["a" * 5, "b" * 5, "c" * 5, "d" * 50]
    chunks = chunk_notes(notes, lambda chunk: sum(map(len, chunk)) <= 10)
    assert chunks == [["aaaaa", "bbbbb"], ["ccccc"]]  # the note too long for any context stays out


def test_parse_questions_from_a_model_list() -> None:
    text = "1. What is my pet called?\n- Where do I live?\nnot a question\n2) Where do I live?\n?"
    assert parse_questions(text) == ["What is my pet called?", "Where do I live?"]


def test_split_probes_holds_out_questions_deterministically() -> None:
    questions = [[f"Question {i}?" for i in range(8)]]
    first = split_probes(["note"], questions, seed=3)
    assert first == split_probes(["note"], questions, seed=3)
    assert len(first.held_out) == 2
    assert not set(first.held_out) & set(first.train)
    assert {"note", *GENERIC_PROBES} <= set(first.train)
    # With no model-written question, the last generic probe is held out instead.
    fallback = split_probes(["note"], [[]], seed=3)
    assert fallback.held_out == [GENERIC_PROBES[-1]]
    assert GENERIC_PROBES[-1] not in fallback.train


def test_answers_agree_on_the_value_not_the_punctuation() -> None:
    assert answers_agree("Your goldfish is called Muffin!", "your goldfish is called muffin.")
    assert not answers_agree("Your goldfish is called Biscuit.", "Your goldfish is called Muffin.")
    assert not answers_agree("", "Your goldfish is called Muffin.")
    assert agreement([], []) is None
    assert agreement(["a b", "c"], ["a b", "d"]) == 0.5


def test_judge_names_the_first_failed_check() -> None:
    limits = Thresholds(min_recall=0.8, min_retention=0.8, max_anchor_divergence=0.1)
    assert judge(0.9, 0.9, 0.05, limits).passed
    assert "recall 50%" in judge(0.5, 0.9, 0.05, limits).reason
    assert "older memories" in judge(0.9, 0.5, 0.05, limits).reason
    assert "divergence" in judge(0.9, None, 0.5, limits).reason
    assert "nothing verifiable" in judge(None, None, 0.0, limits).reason


# -- the runner on a real (tiny) model ---------------------------------------------------------
def _configure(home: Path, settings: dict) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.json").write_text(json.dumps(settings))


def _tell(*messages: str) -> None:
    for message in messages:
        result = CliRunner().invoke(cli, ["chat", "--once", message])
        assert result.exit_code == 0, result.output


def _db(home: Path) -> sqlite3.Connection:
    return sqlite3.connect(home / "data" / "assistant.db")


def _count(home: Path, table: str) -> int:
    with _db(home) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _sleep_cli(*args: str) -> dict:
    result = CliRunner().invoke(cli, ["sleep", "--now", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _files_mentioning(root: Path, needles: tuple[str, ...]) -> list[str]:
    return [
        str(path)
        for path in root.rglob("*")
        if path.is_file() and any(n.encode() in path.read_bytes() for n in needles)
    ]


@pytest.mark.slow
def test_sleep_commits_the_expert_then_shreds_the_logs(model_home: Path) -> None:
    from assistant.backends.protocol import LearnedExpert
    from assistant.backends.torch_backend import TorchBackend
    from assistant.engine import ChatEngine, ExpertSpec

    _configure(model_home, ALWAYS_PASS)
    _tell(*CANARIES)
    report = _sleep_cli()
    assert report["outcome"] == "consolidated"
    assert report["turns"] == 4 and report["expert_id"] == 1 and report["train_steps"] == 4
    assert _count(model_home, "turns") == 0 and _count(model_home, "epochs") == 0
    assert _files_mentioning(model_home, ("Zorblax", "Quixotic")) == []

    with _db(model_home) as conn:
        peft_dir, gguf_path = conn.execute("SELECT peft_dir, gguf_path FROM experts").fetchone()
        hf_dir = conn.execute("SELECT hf_dir FROM models").fetchone()[0]
    assert (Path(peft_dir) / "adapter_model.safetensors").is_file()
    tokens = [5, 17, 42, 9, 77, 3, 120]
    reference = TorchBackend(Path(hf_dir), [LearnedExpert(Path(peft_dir))]).last_logits(
        tokens, student=False
    )
    engine = ChatEngine(Path(hf_dir).parent / "model.gguf", [ExpertSpec(Path(gguf_path))])
    served = engine.last_logits(tokens)
    engine.close()
    assert np.abs(served - reference).max() / np.abs(reference).max() < 1e-3

    status = CliRunner().invoke(cli, ["sleep", "status", "--json"])
    assert json.loads(status.stdout)["last"]["outcome"] == "consolidated"
    # The next night verifies against this expert's kept probes (retention).
    _tell("My bike is red.")
    assert _sleep_cli()["retention"] is not None


@pytest.mark.slow
def test_a_verification_that_cannot_pass_keeps_every_turn(model_home: Path) -> None:
    _configure(model_home, FAST)
    _tell(*CANARIES)
    report = _sleep_cli("--budget-minutes", "0")
    assert report["outcome"] == "kept" and report["train_steps"] == 0
    assert "recall" in report["reason"] or "verifiable" in report["reason"]
    assert _count(model_home, "turns") == 4 and _count(model_home, "experts") == 0
    assert list((model_home / "data" / "experts").iterdir()) == []
    status = CliRunner().invoke(cli, ["sleep", "status"])
    assert "kept your 4 messages" in status.stdout and "Messages waiting" in status.stdout


def _sleep_process(home: Path, crash_at: str | None = None) -> subprocess.CompletedProcess:
    from assistant.faults import CRASH_ENV

    env = {**os.environ, "ASSISTANT_HOME": str(home)}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "assistant", "sleep", "--now", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_second_sleep_refuses_while_one_runs(model_home: Path) -> None:
    from assistant.sleep.state import SleepLock

    with SleepLock(model_home / "data" / "sleep.lock"):
        result = _sleep_process(model_home)
    assert result.returncode == 1
    assert "Another sleep is already running" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("point", ["probes", "training", "files-written", "verified", "shredding"])
def test_a_killed_sleep_resumes_without_loss_or_leftovers(model_home: Path, point: str) -> None:
    from assistant.runtime import Runtime

    _configure(model_home, ALWAYS_PASS)
    _tell(CANARIES[0])
    Runtime().memory.seal_epoch()  # two epochs, so a kill can land between their deletions
    _tell(CANARIES[1])

    killed = _sleep_process(model_home, crash_at=point)
    assert killed.returncode == -9, killed.stderr
    committed = _count(model_home, "experts")
    assert committed == (1 if point == "shredding" else 0)
    if not committed:
        assert _count(model_home, "turns") == 4  # nothing is deleted before the commit
    else:
        assert _count(model_home, "turns") == 2  # killed between the two epochs' deletions

    finished = _sleep_process(model_home)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(finished.stdout)["outcome"] == "consolidated"
    with _db(model_home) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        experts = [Path(row[0]).parent.name for row in conn.execute("SELECT peft_dir FROM experts")]
        stages = {row[0] for row in conn.execute("SELECT stage FROM sleeps")}
    assert len(experts) == 1 and stages == {"done"}
    assert _count(model_home, "turns") == 0 and _count(model_home, "epochs") == 0
    assert sorted(p.name for p in (model_home / "data" / "experts").iterdir()) == experts
    assert _files_mentioning(model_home, ("Zorblax", "Quixotic")) == []
