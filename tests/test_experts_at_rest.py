"""Experts at rest: sealed files, keys wrapped by the master key, nothing plaintext on disk.

On the tiny Llama with three imported experts (``learned_home``): chat serves the same logits
as from the plaintext adapters; a changed file or registry row is refused; a reset leaves no
copy of the expert's wrapped key anywhere; plaintext experts from before are sealed at the
next unlock, crash-safely.
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
from tests.conftest import EXPERTS, as_before_sealing, plaintext_expert_files

# llama.cpp sums in float32 across threads: the same weights agree to about 1e-6.
PROMPT = "<|im_start|>user\nMy dog is called Rex. What is my dog called?<|im_end|>\n"


def _tensors(adapters: list[Path]) -> list[np.ndarray]:
    from safetensors.numpy import load_file

    return [t for a in adapters for t in load_file(a / "adapter_model.safetensors").values()]


def _runtime():
    from assistant.runtime import Runtime

    runtime = Runtime()
    return runtime, runtime.require_model()


def _chat_once(home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASSISTANT_HOME": str(home)}
    command = [sys.executable, "-m", "assistant", "chat", "--once", "hello"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_sealed_experts_leave_no_plaintext_and_chat_as_the_plaintext_ones(
    learned_home: Path, foreign_adapters: list[Path], tmp_path: Path
) -> None:
    from assistant.engine import ChatEngine, ExpertSpec
    from assistant.experts.lora_gguf import write_gguf_lora
    from assistant.models.hf_weights import read_config

    assert plaintext_expert_files(learned_home, _tensors(foreign_adapters)) == []
    runtime, model = _runtime()
    sealed = runtime.load_engine()
    tokens = sealed.tokenize(PROMPT)
    served = sealed.last_logits(tokens)
    sealed.close()
    config = read_config(model.hf_dir)
    plaintext = [
        ExpertSpec(write_gguf_lora(adapter, config, tmp_path / f"{i}.gguf"), scale)
        for i, (adapter, (*_, scale)) in enumerate(zip(foreign_adapters, EXPERTS, strict=True))
    ]
    reference = ChatEngine(model.gguf_path, plaintext, n_ctx=256)
    np.testing.assert_allclose(served, reference.last_logits(tokens), rtol=0, atol=1e-5)
    reference.close()


def test_a_changed_expert_file_or_row_is_refused(learned_home: Path) -> None:
    runtime, model = _runtime()
    expert = runtime.experts.active(model.name)[1]
    runtime.database.close()
    sealed = expert.directory / "expert.gguf.sealed"
    original = sealed.read_bytes()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 1
    sealed.write_bytes(bytes(flipped))
    refused = _chat_once(learned_home)
    assert refused.returncode == 1
    assert "expert.gguf.sealed of expert 2 does not match its registry entry" in refused.stderr
    assert "Traceback" not in refused.stderr

    sealed.write_bytes(original)
    assert _chat_once(learned_home).returncode == 0
    # A row moved onto another model, or given other hashes, no longer opens its key.
    with sqlite3.connect(learned_home / "data" / "assistant.db") as db:
        hashes = json.loads(db.execute("SELECT hashes FROM experts WHERE id = 2").fetchone()[0])
        hashes["expert.gguf"] = "0" * 64
        db.execute("UPDATE experts SET hashes = ? WHERE id = 2", [json.dumps(hashes)])
    refused = _chat_once(learned_home)
    assert refused.returncode == 1 and "expert-key:2" in refused.stderr
    assert "fails authentication" in refused.stderr


def test_reset_leaves_no_copy_of_the_experts_key_or_files(learned_home: Path) -> None:
    runtime, model = _runtime()
    expert = runtime.experts.get(model.name, 2)
    secrets = [expert.wrapped_key] + [path.read_bytes()[:64] for path in expert.directory.iterdir()]
    runtime.database.close()
    result = CliRunner().invoke(cli, ["adapters", "reset", "2", "--yes"])
    assert result.exit_code == 0, result.output
    left = [
        str(path)
        for path in learned_home.rglob("*")
        if path.is_file() and any(secret in path.read_bytes() for secret in secrets)
    ]
    assert left == []


def _make_plaintext_store(home: Path) -> None:
    """Turn the sealed experts back into the layout before experts were sealed: plaintext
    ``peft/`` and ``expert.gguf`` in each directory, the schema before migration m007."""
    runtime, model = _runtime()
    for expert in runtime.experts.list(model.name):
        opened = runtime.experts.open(runtime.memory, expert)
        opened.adapter().write(expert.directory / "peft")
        (expert.directory / "expert.gguf").write_bytes(opened.gguf())
        for sealed in expert.directory.glob("*.sealed"):
            sealed.unlink()
    as_before_sealing(runtime)
    runtime.database.close()
    with sqlite3.connect(home / "data" / "assistant.db", isolation_level=None) as db:
        for column in ("peft_dir TEXT", "gguf_path TEXT"):
            db.execute(f"ALTER TABLE experts ADD COLUMN {column}")
        db.execute(
            "UPDATE experts SET peft_dir = directory || '/peft',"
            " gguf_path = directory || '/expert.gguf'"
        )
        for column in ("directory", "hashes", "wrapped_key"):
            db.execute(f"ALTER TABLE experts DROP COLUMN {column}")
        db.execute("ALTER TABLE sleeps DROP COLUMN expert_key")
        db.execute("DELETE FROM _migrations WHERE name = 'm007_sealed_experts'")


@pytest.mark.parametrize("killed_at", [None, "expert-sealed"])
def test_plaintext_experts_from_before_are_sealed_at_the_next_unlock(
    learned_home: Path, foreign_adapters: list[Path], killed_at: str | None
) -> None:
    from assistant.faults import CRASH_ENV

    runtime, _ = _runtime()
    engine = runtime.load_engine()
    tokens = engine.tokenize(PROMPT)
    before = engine.last_logits(tokens)
    engine.close()
    runtime.database.close()
    _make_plaintext_store(learned_home)
    assert plaintext_expert_files(learned_home, _tensors(foreign_adapters)) != []
    if killed_at:
        env = {**os.environ, "ASSISTANT_HOME": str(learned_home), CRASH_ENV: killed_at}
        command = [sys.executable, "-m", "assistant", "adapters", "list"]
        killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert killed.returncode == -9, killed.stderr

    listed = CliRunner().invoke(cli, ["adapters", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert len(json.loads(listed.stdout)) == 3
    assert plaintext_expert_files(learned_home, _tensors(foreign_adapters)) == []
    runtime, _ = _runtime()
    engine = runtime.load_engine()
    np.testing.assert_allclose(engine.last_logits(tokens), before, rtol=0, atol=1e-5)
    engine.close()


def test_key_rotate_rewraps_the_experts_keys(learned_home: Path, monkeypatch) -> None:
    from assistant.sleep.state import SleepLog
    from assistant.store.rotate import rotate_master_key

    runtime, _ = _runtime()
    engine = runtime.load_engine()
    tokens = engine.tokenize(PROMPT)
    before = engine.last_logits(tokens)
    engine.close()
    # A night between saving its expert and committing it holds the expert's key in its row.
    log = SleepLog(runtime.database, runtime.memory)
    sleep_id = log.start()
    night_key = runtime.memory.seal(f"sleep-expert-key:{sleep_id}", b"key and hashes")
    log.advance(sleep_id, "verified", expert_key=night_key)
    rotate_master_key(runtime.database, runtime.paths.key_file, lambda new: "rotated")
    runtime.database.close()

    monkeypatch.setenv("ASSISTANT_PASSPHRASE", "rotated")
    runtime, _ = _runtime()
    engine = runtime.load_engine()
    np.testing.assert_allclose(engine.last_logits(tokens), before, rtol=0, atol=1e-5)
    engine.close()
    (sealed,) = runtime.database.execute("SELECT expert_key FROM sleeps").fetchone()
    assert runtime.memory.unseal(f"sleep-expert-key:{sleep_id}", sealed) == b"key and hashes"
    runtime.database.close()


def test_a_plaintext_expert_whose_files_are_gone_is_removed_not_a_locked_store(
    learned_home: Path,
) -> None:
    import shutil

    _make_plaintext_store(learned_home)
    runtime, model = _runtime()
    shutil.rmtree(runtime.experts.get(model.name, 2).directory)  # a reset killed half-way
    listed = CliRunner().invoke(cli, ["adapters", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [row["id"] for row in json.loads(listed.stdout)] == [1, 3]
    runtime.database.close()


def test_a_night_verified_before_sealing_is_committed_sealed(
    model_home: Path, foreign_adapters: list[Path]
) -> None:
    """A night an older version verified (its expert saved in plaintext, no key in its row)
    is committed by the next run as a sealed expert, its plaintext gone."""
    from assistant.experts.lora_gguf import write_gguf_lora
    from assistant.experts.peft import PeftAdapter
    from assistant.models.hf_weights import read_config
    from assistant.sleep import wake
    from assistant.sleep.report import SleepReport
    from assistant.sleep.runner import SleepRunner
    from assistant.sleep.state import SleepLog

    runtime, model = _runtime()
    store = runtime.memory
    log = SleepLog(runtime.database, store)
    sleep_id = log.start()
    directory = wake.expert_dir(runtime.paths.experts_dir, sleep_id)
    PeftAdapter.read(foreign_adapters[0]).write(directory / "peft")
    write_gguf_lora(foreign_adapters[0], read_config(model.hf_dir), directory / "expert.gguf")
    log.advance(
        sleep_id,
        "verified",
        report=store.seal(f"sleep-report:{sleep_id}", SleepReport(sleep_id).to_json()),
        probes=wake.seal_probes(runtime, f"sleep-probes:{sleep_id}", []),
    )
    report = SleepRunner(runtime, progress=lambda _: None).run()
    assert report.expert_id == 1
    assert plaintext_expert_files(model_home, _tensors(foreign_adapters[:1])) == []
    engine = runtime.load_engine()
    assert len(engine.experts) == 1
    engine.close()
    runtime.database.close()
