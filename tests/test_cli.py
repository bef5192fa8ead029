"""The command line: paths, model registry, one-shot chat and bad input."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.cli import cli


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run(
        [shutil.which("assistant") or "assistant", *args],
        input=stdin,
        capture_output=True,
        env=os.environ.copy(),
        timeout=300,
    )


def stored_turns(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "data" / "assistant.db") as raw:
        return raw.execute("SELECT role, ciphertext FROM turns ORDER BY id").fetchall()


def test_paths_follow_assistant_home(home):
    result = CliRunner().invoke(cli, ["paths", "--json"])
    assert result.exit_code == 0
    described = json.loads(result.output)
    assert all(value.startswith(str(home)) for value in described.values())


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys, assistant.cli; "
        "heavy = ('torch', 'llama_cpp', 'transformers', 'textual', 'mlx'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_add_list_use_rm(home, tiny_llama, tiny_qwen2):
    runner = CliRunner()
    assert runner.invoke(cli, ["model", "add", str(tiny_llama), "--name", "one"]).exit_code == 0
    assert runner.invoke(cli, ["model", "add", str(tiny_qwen2), "--name", "two"]).exit_code == 0
    listing = json.loads(runner.invoke(cli, ["model", "list", "--json"]).output)
    assert [(m["name"], m["active"]) for m in listing] == [("one", True), ("two", False)]
    assert runner.invoke(cli, ["model", "use", "two"]).exit_code == 0
    assert "* two" in runner.invoke(cli, ["model", "list"]).output
    duplicate = runner.invoke(cli, ["model", "add", str(tiny_llama), "--name", "one"])
    assert duplicate.exit_code == 1 and "already registered" in duplicate.output
    assert runner.invoke(cli, ["model", "rm", "two", "--yes"]).exit_code == 0
    assert not (home / "data" / "models" / "two").exists()
    assert [
        m["name"] for m in json.loads(runner.invoke(cli, ["model", "list", "--json"]).output)
    ] == ["one"]


def test_a_command_turned_away_is_told_what_holds_the_writer_lock(home, tiny_llama):
    from assistant.runtime import Runtime
    from assistant.store import lock

    runner = CliRunner()
    assert runner.invoke(cli, ["model", "add", str(tiny_llama), "--name", "one"]).exit_code == 0
    runtime = Runtime()
    path = runtime.paths.writer_lock
    assert lock.holder(path) is None
    with runtime.exclusive("an adapter import"):
        assert lock.holder(path) == "an adapter import"  # not a sleep: the app stays awake
        refused = runner.invoke(cli, ["adapters", "reset", "--all", "--yes"])
        assert refused.exit_code == 1
        assert "An adapter import is running, so an adapter reset has to wait." in refused.output
        with pytest.raises(lock.StoreBusyError, match="Another adapter import is already"):
            runtime.exclusive("an adapter import").__enter__()
    assert lock.holder(path) is None
    assert runner.invoke(cli, ["adapters", "reset", "--all", "--yes"]).output == (
        "Nothing to forget.\n"
    )
    runtime.database.close()


def test_the_model_does_not_change_under_a_night(home, tiny_llama, tiny_qwen2):
    from assistant.runtime import Runtime
    from assistant.sleep.state import SleepLog
    from assistant.store.lock import SLEEP

    runner = CliRunner()
    assert runner.invoke(cli, ["model", "add", str(tiny_llama), "--name", "one"]).exit_code == 0
    assert runner.invoke(cli, ["model", "add", str(tiny_qwen2), "--name", "two"]).exit_code == 0
    runtime = Runtime()
    with runtime.exclusive(SLEEP):  # a night is running
        for command in (["model", "use", "two"], ["model", "rm", "one", "--yes"]):
            refused = runner.invoke(cli, command)
            assert refused.exit_code == 1
            assert "A sleep is running, so" in refused.output
            assert "learns on the model it started with" in refused.output
    # A night killed after verification commits on the next run: until then, no switch.
    log = SleepLog(runtime.database, runtime.memory)
    sleep_id = log.start()
    log.advance(sleep_id, "verified")
    refused = runner.invoke(cli, ["model", "use", "two"])
    assert refused.exit_code == 1
    assert f"Sleep {sleep_id} learned an expert that is not committed yet" in refused.output
    assert "assistant sleep --now" in refused.output
    assert runtime.models.active().name == "one"
    log.advance(sleep_id, "done")
    assert runner.invoke(cli, ["model", "use", "two"]).exit_code == 0
    runtime.database.close()


def _broken_models(tmp_path: Path, tiny_llama: Path) -> dict[str, tuple[Path, str]]:
    not_a_model = tmp_path / "photos"
    not_a_model.mkdir()
    (not_a_model / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    gpt2 = tmp_path / "gpt2"
    shutil.copytree(tiny_llama, gpt2)
    config = json.loads((gpt2 / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (gpt2 / "config.json").write_text(json.dumps(config))
    return {
        "missing": (tmp_path / "nowhere", "No such file or directory"),
        "not a model": (not_a_model, "not a Hugging Face model directory"),
        "unsupported": (gpt2, "Unsupported architecture 'GPT2LMHeadModel'"),
    }


def test_bad_model_sources_are_refused_cleanly(home, tmp_path, tiny_llama):
    for source, expected in _broken_models(tmp_path, tiny_llama).values():
        result = CliRunner().invoke(cli, ["model", "add", str(source)])
        assert result.exit_code == 1, result.output
        assert expected in result.output
        assert "Traceback" not in result.output
    models_dir = home / "data" / "models"
    assert not models_dir.exists() or list(models_dir.iterdir()) == []
    assert json.loads(CliRunner().invoke(cli, ["model", "list", "--json"]).output) == []


@pytest.mark.slow
def test_chat_once_prints_a_reply_and_stores_two_encrypted_turns(model_home):
    result = run_cli("chat", "--once", "Hello there, my cat is called Mittens.")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip()
    turns = stored_turns(model_home)
    assert [role for role, _ in turns] == ["user", "assistant"]
    assert all(b"Mittens" not in blob for _, blob in turns)


def test_chat_without_any_model_says_how_to_add_one(home, monkeypatch):
    monkeypatch.setattr("assistant.models.registry.starter_gguf", lambda: None)  # broken install
    result = CliRunner().invoke(cli, ["chat", "--once", "hi"])
    assert result.exit_code == 1
    assert "the starter model is missing" in result.output
    assert "assistant model add" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "message, expected",
    [
        (b"x" * (1024 * 1024), b"the limit is"),
        (b"binary \x00\x01 data", b"NUL bytes"),
        (b"invalid \xff\xfe utf-8", b"not valid UTF-8"),
    ],
    ids=["1MB", "NUL", "invalid-utf8"],  # the 1 MB value must not become the test id
)
def test_bad_messages_exit_nonzero_and_store_nothing(model_home, message, expected):
    result = run_cli("chat", "--once", "-", stdin=message)
    assert result.returncode == 1
    assert expected in result.stderr
    assert b"Traceback" not in result.stderr
    assert not (model_home / "data" / "assistant.db").exists() or stored_turns(model_home) == []


def test_bad_message_as_argument(model_home):
    result = CliRunner().invoke(cli, ["chat", "--once", "surrogate \udcff here"])
    assert result.exit_code == 1
    assert "not valid UTF-8" in result.output


def test_missing_model_file_is_explained(model_home):
    from assistant.runtime import Runtime

    Runtime().models.active().gguf_path.unlink()
    result = run_cli("chat", "--once", "hello")
    assert result.returncode == 1
    assert b"model file" in result.stderr and b"is missing" in result.stderr
