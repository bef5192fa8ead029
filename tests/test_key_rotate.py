"""`assistant key rotate`: a new master key for every source, everything still reads, the old key
opens nothing, and a rotation killed at any step leaves one working key and is completed."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.errors import AssistantError, KeyStoreError, TamperedError, WrongKeyError
from assistant.sleep.state import SleepLog
from assistant.store.keys import ROTATION_META, initialize, pending_key_file, unlock
from assistant.store.memory import MemoryStore
from assistant.store.rotate import rotate_master_key

NEW_PASSPHRASE = "a brand new passphrase"
TEXTS = ["I was born in Oslo.", "Noted.", "My cat is Mitten."]


def _fill(runtime) -> dict[str, bytes]:
    """Turns in a sealed and an open epoch, a sleep row, its report and an expert's probes."""
    store = runtime.memory
    conversation = store.new_conversation()
    store.append(conversation, "user", TEXTS[0])
    store.append(conversation, "assistant", TEXTS[1])
    store.seal_epoch()
    store.append(conversation, "user", TEXTS[2])
    log = SleepLog(runtime.database, store)
    sleep_id = log.start()
    log.advance(sleep_id, "paused", report=store.seal(f"sleep-report:{sleep_id}", b"report"))
    with sqlite3.connect(runtime.paths.database) as raw:  # no model or expert row needed
        raw.execute(
            "INSERT INTO expert_probes VALUES (3, ?)", [store.seal("expert-probes:3", b"probes")]
        )
    return {f"sleep-report:{sleep_id}": b"report", "expert-probes:3": b"probes"}


def _everything_reads(runtime, key: bytes, records: dict[str, bytes]) -> None:
    store = MemoryStore(runtime.database, key)
    assert [t.text for t in store.unconsolidated()] == TEXTS
    assert [row.stage for row in SleepLog(runtime.database, store).unfinished()] == ["paused"]
    (report,) = runtime.database.execute("SELECT report FROM sleeps").fetchall()
    assert store.unseal("sleep-report:1", report[0]) == records["sleep-report:1"]
    (probes,) = runtime.database.execute("SELECT sealed FROM expert_probes").fetchall()
    assert store.unseal("expert-probes:3", probes[0]) == records["expert-probes:3"]


def _nothing_left_behind(runtime) -> None:
    assert runtime.database.get_meta(ROTATION_META) is None
    assert not pending_key_file(runtime.paths.key_file).exists()


def _new_passphrase(new: bool) -> str:
    assert new, "the old passphrase comes from ASSISTANT_PASSPHRASE"
    return NEW_PASSPHRASE


def test_rotating_a_passphrase_store(product_key_derivation, runtime, monkeypatch):
    records = _fill(runtime)
    old_key = unlock(runtime.database, runtime.paths.key_file)
    rotate_master_key(runtime.database, runtime.paths.key_file, _new_passphrase)
    with pytest.raises(WrongKeyError):
        unlock(runtime.database, runtime.paths.key_file)  # the old passphrase
    monkeypatch.setenv("ASSISTANT_PASSPHRASE", NEW_PASSPHRASE)
    new_key = unlock(runtime.database, runtime.paths.key_file)
    assert new_key != old_key
    assert json.loads(runtime.database.get_meta("kdf"))["n"] == 2**17
    _everything_reads(runtime, new_key, records)
    with pytest.raises(TamperedError):
        MemoryStore(runtime.database, old_key).unconsolidated()
    _nothing_left_behind(runtime)


def test_a_new_passphrase_needs_a_terminal(runtime):
    records = _fill(runtime)
    with pytest.raises(KeyStoreError, match="new passphrase must be typed"):
        rotate_master_key(runtime.database, runtime.paths.key_file, None)
    _everything_reads(runtime, unlock(runtime.database, runtime.paths.key_file), records)
    _nothing_left_behind(runtime)


def _keyfile_home(home: Path, monkeypatch) -> None:
    from assistant.paths import Paths

    monkeypatch.delenv("ASSISTANT_PASSPHRASE")
    paths = Paths.discover().ensure()
    from assistant.store.db import Database

    database = Database(paths.database)
    initialize(database, paths.key_file, "keyfile")
    database.close()


def test_key_rotate_on_the_cli_for_a_key_file(home, monkeypatch):
    from assistant.runtime import Runtime

    _keyfile_home(home, monkeypatch)
    runtime = Runtime()
    records = _fill(runtime)
    old_key = runtime.paths.key_file.read_bytes()
    result = CliRunner().invoke(cli, ["key", "rotate"])
    assert result.exit_code == 0, result.output
    assert "old key no longer opens" in result.output
    new_key = runtime.paths.key_file.read_bytes()
    assert len(new_key) == 32 and new_key != old_key
    assert runtime.paths.key_file.stat().st_mode & 0o777 == 0o600
    _everything_reads(runtime, unlock(runtime.database, runtime.paths.key_file), records)
    runtime.paths.key_file.write_bytes(old_key)  # a copy of the old key file opens nothing
    with pytest.raises(WrongKeyError):
        unlock(runtime.database, runtime.paths.key_file)
    _nothing_left_behind(runtime)


def test_rotating_a_keychain_store_deletes_the_old_entry(runtime, monkeypatch, memory_keyring):
    monkeypatch.delenv("ASSISTANT_PASSPHRASE")
    records = _fill(runtime)
    assert runtime.database.get_meta("key_source") == "keyring"
    old_entries = dict(memory_keyring)
    rotate_master_key(runtime.database, runtime.paths.key_file)
    assert len(memory_keyring) == 1 and not set(old_entries) & set(memory_keyring)
    _everything_reads(runtime, unlock(runtime.database, runtime.paths.key_file), records)
    _nothing_left_behind(runtime)


ROTATE_SCRIPT = (
    "import sys\n"
    "from assistant.runtime import Runtime\n"
    "from assistant.store.rotate import rotate_master_key\n"
    "runtime = Runtime()\n"
    "rotate_master_key(runtime.database, runtime.paths.key_file, lambda new: sys.argv[1])\n"
)


@pytest.mark.parametrize("source", ["keyfile", "passphrase"])
@pytest.mark.parametrize("point", ["rotate-new-key-stored", "rotate-rewrapped", "rotate-committed"])
def test_a_rotation_killed_at_any_step_leaves_one_working_key_and_reruns(
    home, monkeypatch, source, point
):
    from assistant.faults import CRASH_ENV
    from assistant.runtime import Runtime

    if source == "keyfile":
        _keyfile_home(home, monkeypatch)
    runtime = Runtime()
    records = _fill(runtime)
    env = {**os.environ, CRASH_ENV: point}
    killed = subprocess.run(
        [sys.executable, "-c", ROTATE_SCRIPT, NEW_PASSPHRASE], env=env, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()
    if point == "rotate-committed":  # the new key rules; the next unlock shreds the old one
        assert json.loads(runtime.database.get_meta(ROTATION_META))["state"] == "committed"
        assert pending_key_file(runtime.paths.key_file).exists() == (source == "keyfile")
        monkeypatch.setenv("ASSISTANT_PASSPHRASE", NEW_PASSPHRASE)
    # Either the old key or the new one opens everything, as if nothing had happened.
    _everything_reads(runtime, unlock(runtime.database, runtime.paths.key_file), records)
    if point == "rotate-committed":
        _nothing_left_behind(runtime)

    rotate_master_key(runtime.database, runtime.paths.key_file, _new_passphrase)  # the rerun
    if source == "passphrase":
        monkeypatch.setenv("ASSISTANT_PASSPHRASE", NEW_PASSPHRASE)
    _everything_reads(runtime, unlock(runtime.database, runtime.paths.key_file), records)
    _nothing_left_behind(runtime)


def test_a_column_missing_from_the_registry_stops_the_rotation_before_any_change(runtime):
    records = _fill(runtime)
    store = runtime.memory
    runtime.database.execute("ALTER TABLE conversations ADD COLUMN secret BLOB")
    runtime.database.execute("UPDATE conversations SET secret = ?", [store.seal("x", b"data")])
    check = runtime.database.get_meta("key_check")
    with pytest.raises(AssistantError, match="conversations.secret is not in the registry"):
        rotate_master_key(runtime.database, runtime.paths.key_file, _new_passphrase)
    assert runtime.database.get_meta("key_check") == check
    _everything_reads(runtime, unlock(runtime.database, runtime.paths.key_file), records)
    _nothing_left_behind(runtime)


def test_a_window_opened_before_the_rotation_seals_nothing_under_the_old_key(runtime):
    _fill(runtime)
    stale = runtime.memory  # e.g. the chat app, open while `key rotate` runs elsewhere
    stale.seal_epoch()
    rotate_master_key(runtime.database, runtime.paths.key_file, _new_passphrase)
    with pytest.raises(KeyStoreError, match="key was changed"):
        stale.append(stale.new_conversation(), "user", "a new epoch needs a wrapped key")
