"""Store integrity: a turn's time and a sleep's state are authenticated, the files are private
from their first byte, a key file of the wrong size and old scrypt costs are handled."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from assistant.errors import KeyStoreError, TamperedError
from assistant.sleep.state import SleepLog
from assistant.store.db import Database
from assistant.store.keys import derive_from_passphrase, initialize, key_check, unlock
from assistant.store.memory import MemoryStore
from tests.conftest import TEST_PASSPHRASE, as_before_sealing


def _reopened(runtime) -> MemoryStore:
    return MemoryStore(runtime.database, unlock(runtime.database, runtime.paths.key_file))


def _raw(runtime, sql: str, params: list | tuple = ()) -> None:
    with sqlite3.connect(runtime.paths.database) as raw:
        raw.execute(sql, params)


def test_a_turn_whose_time_was_edited_is_refused(runtime):
    store = runtime.memory
    store.append(store.new_conversation(), "user", "I moved to Porto.")
    _raw(runtime, "UPDATE turns SET created_at = '2020-01-01T00:00:00+00:00'")
    with pytest.raises(TamperedError, match="modified or moved") as caught:
        _reopened(runtime).unconsolidated()
    assert "Porto" not in str(caught.value)


def test_turns_sealed_before_the_time_was_bound_still_open_and_cannot_be_downgraded(runtime):
    from assistant.store.memory import _turn_ad

    store = runtime.memory
    conversation = store.new_conversation()
    store.append(conversation, "user", "a turn from today")
    # A row as the previous version wrote it: AD v1, no time in it, ad_version defaulted to 1.
    epoch = store.open_epoch()
    nonce = os.urandom(12)
    sealed = store._epoch_cipher(epoch).encrypt(
        nonce, b"a turn from last year", _turn_ad(1, 99, epoch, conversation, "user", "")
    )
    _raw(
        runtime,
        "INSERT INTO turns (id, epoch_id, conversation_id, role, created_at, nonce, ciphertext)"
        " VALUES (99, ?, ?, 'user', '2025-01-01T00:00:00+00:00', ?, ?)",
        [epoch, conversation, nonce, sealed],
    )
    texts = [t.text for t in _reopened(runtime).unconsolidated()]
    assert texts == ["a turn from today", "a turn from last year"]
    # Relabelling today's turn as v1 to escape the time check does not open it.
    _raw(runtime, "UPDATE turns SET ad_version = 1, created_at = 'x' WHERE id != 99")
    with pytest.raises(TamperedError, match="modified or moved"):
        _reopened(runtime).unconsolidated()


@pytest.mark.parametrize(
    "column, value",
    [("stage", "verified"), ("epochs", "[1, 2, 3]"), ("expert_id", 7), ("state_seal", None)],
)
def test_an_edited_sleep_row_is_refused(runtime, column, value):
    log = SleepLog(runtime.database, runtime.memory)
    sleep_id = log.start()
    log.advance(sleep_id, "learning", epochs=[1])
    assert log.get(sleep_id).epochs == [1]
    _raw(runtime, f"UPDATE sleeps SET {column} = ?", [value])
    with pytest.raises(TamperedError, match=f"record of sleep {sleep_id} was changed"):
        SleepLog(runtime.database, _reopened(runtime)).unfinished()
    with pytest.raises(TamperedError, match="nothing is shredded"):
        log.advance(sleep_id, "shredding")


def test_sleep_rows_from_before_the_seal_are_sealed_once_then_checked(runtime):
    from assistant.runtime import Runtime

    runtime.memory  # noqa: B018 - unlocked
    as_before_sealing(runtime)
    _raw(runtime, "INSERT INTO sleeps (started_at, stage, epochs) VALUES ('t', 'paused', '[4]')")
    reopened = Runtime()  # the first unlock after the upgrade seals it
    (row,) = SleepLog(reopened.database, reopened.memory).unfinished()
    assert (row.stage, row.epochs) == ("paused", [4])
    _raw(runtime, "UPDATE sleeps SET epochs = '[4, 5]'")
    with pytest.raises(TamperedError, match="was changed"):
        SleepLog(runtime.database, runtime.memory).unfinished()


def test_an_unsealed_row_in_a_sealed_store_is_refused_after_any_unlock(runtime):
    """Once a store is sealed, nothing can pass for a record from before: not a sleep row
    without a seal, not an expert without a key (whatever plaintext files it points to)."""
    from assistant.runtime import Runtime

    runtime.memory  # noqa: B018 - a store made by this version: sealed from the start
    _raw(runtime, "INSERT INTO sleeps (started_at, stage, epochs) VALUES ('t', 'verified', '[1]')")
    _raw(
        runtime,
        "INSERT INTO experts (model_name, level, scale, status, directory, created_at, origin)"
        " VALUES ('m', 1, 1.0, 'active', ?, 't', 'sleep')",
        [str(runtime.paths.experts_dir / "planted")],
    )
    reopened = Runtime()
    with pytest.raises(TamperedError, match="was changed"):
        SleepLog(reopened.database, reopened.memory).unfinished()
    (planted,) = reopened.experts.active("m")
    with pytest.raises(TamperedError, match="has no key in the registry"):
        reopened.experts.open(reopened.memory, planted)


_watched: list[Path] = []  # the database path a test watches being opened
_modes_at_open: list[int] = []


def _record_mode_at_open(event: str, args: tuple) -> None:
    """Audit hook: the database file's mode the moment SQLite has created and opened it."""
    if event == "sqlite3.connect/handle" and _watched and _watched[0].exists():
        _modes_at_open.append(stat.S_IMODE(_watched[0].stat().st_mode))


sys.addaudithook(_record_mode_at_open)  # audit hooks cannot be removed; it idles when unwatched


def test_the_database_and_its_wal_and_shm_are_private_from_creation(tmp_path):
    """With a umask that lets everyone read new files, none of the three ever is readable."""
    path = tmp_path / "private" / "db.sqlite"
    previous = os.umask(0)
    _watched.append(path)
    try:
        database = Database(path)
        assert os.umask(0) == 0  # the process's umask is given back as it was
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        database.set_meta("probe", "a write after the first")
        database.close()
    finally:
        _watched.clear()
        os.umask(previous)
    assert _modes_at_open == [0o600]  # already private when SQLite first opened it
    assert modes == {"db.sqlite": 0o600, "db.sqlite-wal": 0o600, "db.sqlite-shm": 0o600}


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_file_of_the_wrong_size_is_refused_with_its_message(tmp_path, size):
    database = Database(tmp_path / "db.sqlite")
    key_file = tmp_path / "master.key"
    initialize(database, key_file, "keyfile")
    key_file.write_bytes(b"k" * size)
    with pytest.raises(KeyStoreError, match=f"holds {size} bytes; a memory key is 32") as caught:
        unlock(database, key_file)
    assert "backup" in caught.value.hint


def test_new_passphrase_stores_use_scrypt_2_17_and_old_2_15_stores_still_open(
    product_key_derivation, runtime, tmp_path
):
    runtime.memory  # noqa: B018 - first use creates the key
    kdf = json.loads(runtime.database.get_meta("kdf"))
    assert (kdf["name"], kdf["n"], kdf["r"], kdf["p"]) == ("scrypt", 2**17, 8, 1)

    old = Database(tmp_path / "old.sqlite")  # a store made by a version with n=2**15
    salt = os.urandom(16)
    key = derive_from_passphrase(TEST_PASSPHRASE, salt, {"n": 2**15, "r": 8, "p": 1})
    old_kdf = {
        "name": "scrypt",
        "n": 2**15,
        "r": 8,
        "p": 1,
        "salt": base64.b64encode(salt).decode(),
    }
    for name, value in (
        ("key_source", "passphrase"),
        ("kdf", json.dumps(old_kdf)),
        ("key_check", key_check(key)),
    ):
        old.set_meta(name, value)
    assert unlock(old, tmp_path / "unused.key") == key
