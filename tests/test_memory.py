"""The encrypted memory store: round trip, wrong keys, tampering, crypto-shredding."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from assistant.errors import InvalidMessageError, KeyStoreError, TamperedError, WrongKeyError
from assistant.store.db import Database
from assistant.store.keys import initialize, unlock
from assistant.store.memory import MAX_MESSAGE_CHARS, MemoryStore

CANARY = "canary-7f3a9 my secret is purple-elephant-42"


def _files_contain(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_round_trip_and_counts(runtime):
    store = runtime.memory
    conversation = store.new_conversation()
    store.append(conversation, "user", "My dog is called Rex.")
    store.append(conversation, "assistant", "Nice, Rex!")
    other = store.new_conversation()
    store.append(other, "user", "Ünïcødé and emoji 🐕 survive.")
    turns = store.unconsolidated()
    assert [t.text for t in turns] == [
        "My dog is called Rex.",
        "Nice, Rex!",
        "Ünïcødé and emoji 🐕 survive.",
    ]
    assert [t.role for t in store.conversation(conversation)] == ["user", "assistant"]
    assert store.count() == 3
    assert [(c.id, c.turn_count) for c in store.conversations()] == [(conversation, 2), (other, 1)]


def test_nothing_in_plaintext_on_disk(runtime, home):
    store = runtime.memory
    store.append(store.new_conversation(), "user", CANARY)
    runtime.database.execute("PRAGMA wal_checkpoint(FULL)")
    assert _files_contain(home, CANARY.encode()) == []


def test_wrong_passphrase_is_refused_and_changes_nothing(runtime, monkeypatch):
    store = runtime.memory
    store.append(store.new_conversation(), "user", "hello")
    before = runtime.database.execute("SELECT count(*), max(id) FROM turns").fetchone()
    meta_before = runtime.database.execute("SELECT * FROM meta ORDER BY key").fetchall()
    monkeypatch.setenv("ASSISTANT_PASSPHRASE", "not the passphrase")
    with pytest.raises(WrongKeyError, match="Wrong passphrase"):
        unlock(runtime.database, runtime.paths.key_file)
    assert runtime.database.execute("SELECT count(*), max(id) FROM turns").fetchone() == before
    assert runtime.database.execute("SELECT * FROM meta ORDER BY key").fetchall() == meta_before


def test_edited_row_is_detected(runtime):
    store = runtime.memory
    store.append(store.new_conversation(), "user", "I live in Lisbon.")
    with sqlite3.connect(runtime.paths.database) as raw:
        (blob,) = raw.execute("SELECT ciphertext FROM turns").fetchone()
        flipped = bytes([blob[0] ^ 1]) + blob[1:]
        raw.execute("UPDATE turns SET ciphertext = ?", [flipped])
    with pytest.raises(TamperedError, match="modified or moved") as caught:
        MemoryStore(
            runtime.database, unlock(runtime.database, runtime.paths.key_file)
        ).unconsolidated()
    assert "Lisbon" not in str(caught.value)


@pytest.mark.parametrize("column", ["role", "swap"])
def test_swapped_or_relabelled_rows_are_detected(runtime, column):
    store = runtime.memory
    conversation = store.new_conversation()
    store.append(conversation, "user", "first")
    store.append(conversation, "assistant", "second")
    with sqlite3.connect(runtime.paths.database) as raw:
        if column == "role":
            raw.execute("UPDATE turns SET role = 'assistant' WHERE role = 'user'")
        else:
            rows = raw.execute("SELECT id, nonce, ciphertext FROM turns ORDER BY id").fetchall()
            (a, na, ca), (b, nb, cb) = rows
            raw.execute("UPDATE turns SET nonce = ?, ciphertext = ? WHERE id = ?", [nb, cb, a])
            raw.execute("UPDATE turns SET nonce = ?, ciphertext = ? WHERE id = ?", [na, ca, b])
    with pytest.raises(TamperedError):
        MemoryStore(
            runtime.database, unlock(runtime.database, runtime.paths.key_file)
        ).unconsolidated()


def test_delete_epoch_shreds_everything(runtime, home):
    store = runtime.memory
    conversation = store.new_conversation()
    store.append(conversation, "user", CANARY)
    store.append(conversation, "assistant", "I will remember " + CANARY)
    epoch = store.seal_epoch()
    store.append(store.new_conversation(), "user", "a turn written during sleep")
    # What shredding must remove from every file: the epoch's wrapped key and ciphertexts
    # (the plaintext canary alone would be absent even if nothing were deleted).
    shredded = [
        bytes(row[0])
        for row in runtime.database.execute(
            "SELECT wrapped_key FROM epochs WHERE id = ? UNION ALL"
            " SELECT ciphertext FROM turns WHERE epoch_id = ?",
            [epoch, epoch],
        )
    ]
    assert len(shredded) == 3 and all(_files_contain(home, blob) for blob in shredded)
    report = store.delete_epoch(epoch)
    assert report.turns_deleted == 2
    assert report.vacuumed
    assert (
        runtime.database.execute("SELECT count(*) FROM epochs WHERE id = ?", [epoch]).fetchone()[0]
        == 0
    )
    assert [t.text for t in store.unconsolidated()] == ["a turn written during sleep"]
    wal = Path(str(runtime.paths.database) + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert [_files_contain(home, blob) for blob in shredded] == [[], [], []]
    assert _files_contain(home, CANARY.encode()) == []
    assert _files_contain(home, b"canary-7f3a9") == []
    integrity = runtime.database.execute("PRAGMA integrity_check").fetchone()[0]
    assert integrity == "ok"


@pytest.mark.parametrize(
    "text, message",
    [
        ("x" * (MAX_MESSAGE_CHARS + 1), "limit"),
        ("x" * (1024 * 1024), "limit"),
        ("binary\x00data", "NUL"),
        ("broken \udcff surrogate", "UTF-8"),
        ("   ", "empty"),
        ("bell \x07", "control"),
    ],
    ids=["over-limit", "1MB", "NUL", "surrogate", "blank", "control"],
)
def test_bad_messages_are_refused_and_store_nothing(runtime, text, message):
    store = runtime.memory
    conversation = store.new_conversation()
    with pytest.raises(InvalidMessageError, match=message):
        store.append(conversation, "user", text)
    assert store.count() == 0


def test_keyring_source(runtime, monkeypatch, memory_keyring):
    monkeypatch.delenv("ASSISTANT_PASSPHRASE")
    key = unlock(runtime.database, runtime.paths.key_file)  # first use picks the keychain
    assert runtime.database.get_meta("key_source") == "keyring"
    assert unlock(runtime.database, runtime.paths.key_file) == key
    memory_keyring.clear()
    with pytest.raises(KeyStoreError, match="keychain has no key"):
        unlock(runtime.database, runtime.paths.key_file)


def test_first_use_in_a_terminal_asks_for_a_new_passphrase(runtime, monkeypatch):
    monkeypatch.delenv("ASSISTANT_PASSPHRASE")
    monkeypatch.setattr("assistant.store.keys.keyring_usable", lambda: False)
    with pytest.raises(KeyStoreError, match="No key store"):
        unlock(runtime.database, runtime.paths.key_file)  # nobody to ask
    asked = []
    key = unlock(runtime.database, runtime.paths.key_file, lambda new: asked.append(new) or "pw")
    assert asked == [True] and runtime.database.get_meta("key_source") == "passphrase"
    assert unlock(runtime.database, runtime.paths.key_file, lambda new: "pw") == key
    with pytest.raises(KeyStoreError, match="locked with a passphrase"):
        unlock(runtime.database, runtime.paths.key_file)


def test_key_file_source_requires_private_permissions(tmp_path):
    database = Database(tmp_path / "db.sqlite")
    key_file = tmp_path / "master.key"
    key = initialize(database, key_file, "keyfile")
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert unlock(database, key_file) == key
    key_file.chmod(0o644)
    with pytest.raises(KeyStoreError, match="readable by other users"):
        unlock(database, key_file)
    key_file.chmod(0o600)
    key_file.write_bytes(b"\x00" * 32)
    with pytest.raises(WrongKeyError):
        unlock(database, key_file)


def test_migrations_are_recorded_once(tmp_path):
    first = Database(tmp_path / "db.sqlite")
    names = [r[0] for r in first.execute("SELECT name FROM _migrations")]
    first.close()
    second = Database(tmp_path / "db.sqlite")
    assert [r[0] for r in second.execute("SELECT name FROM _migrations")] == names
    assert names[0] == "m001_memory"
    assert second.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert second.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY


def test_sealed_records_are_bound_to_their_label(runtime):
    store = runtime.memory
    sealed = store.seal("sleep-report:1", b"what I learned")
    assert b"learned" not in sealed
    assert store.unseal("sleep-report:1", sealed) == b"what I learned"
    with pytest.raises(TamperedError):
        store.unseal("sleep-report:2", sealed)  # a record moved to another row
    with pytest.raises(TamperedError):
        store.unseal("sleep-report:1", sealed[:-1] + bytes([sealed[-1] ^ 1]))
