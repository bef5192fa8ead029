"""``assistant key rotate``: a new master key, every sealed blob re-wrapped, the old key shredded.

Order, so that a kill at any point leaves exactly one key that opens everything:

1. the ``key_rotation`` meta row records where the new key will be (``pending``);
2. the new key is stored where it can be found again (a new keychain entry, or a
   key file beside the old one), the old one untouched;
3. one transaction re-wraps every column in ``SEALED_COLUMNS``, replaces the key
   check (and the KDF salt or keychain entry name) and marks the rotation
   ``committed``;
4. the old key is shredded (keychain entry deleted, key file atomically replaced)
   and the mark removed; the WAL is truncated so the old wrapped blobs leave the disk.

Killed before 3 commits, the old key still opens the memory and the next rotation
first removes the half-made new key; killed after, any unlock finishes step 4.
Epoch keys are not changed, only re-wrapped, so turns are not re-encrypted.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from assistant.errors import AssistantError, KeyStoreError
from assistant.faults import crash_point
from assistant.store.db import Database, retry_while_busy
from assistant.store.keys import (
    ROTATION_META,
    PassphrasePrompt,
    create_key,
    current_source,
    discard_rotation,
    finish_rotation,
    holds_records_from_before_sealing,
    key_check,
    pending_key_file,
    unlock,
)
from assistant.store.sealed import NOT_MASTER_SEALED, SEALED_COLUMNS, unwrap, wrap


def rotate_master_key(
    database: Database, key_file: Path, prompt: PassphrasePrompt | None = None
) -> None:
    """Replace the master key (same source; a passphrase store asks for a new passphrase),
    after finishing or discarding a rotation an earlier run left half-done. The caller
    holds the sleep lock: a night must not seal anything under the old key meanwhile."""
    discard_rotation(database, key_file)
    old_key = unlock(database, key_file, prompt)  # finishes a committed rotation
    if holds_records_from_before_sealing(database, old_key):
        raise KeyStoreError(
            "This memory still holds records an older version wrote unsealed; they are sealed"
            " the next time a command opens it, and only then can its key be replaced.",
            hint="Run `assistant sleep status` once, then rotate again.",
        )
    _require_registered(database)
    source = current_source(database)
    passphrase = _new_passphrase(prompt) if source == "passphrase" else None
    new_keyring_id = str(uuid.uuid4()) if source == "keyring" else ""
    database.set_meta(ROTATION_META, json.dumps({"state": "pending", "keyring_id": new_keyring_id}))
    new_key, meta = create_key(source, pending_key_file(key_file), new_keyring_id, passphrase)
    crash_point("rotate-new-key-stored")
    committed = {"state": "committed", "old_keyring_id": database.get_meta("keyring_id")}
    meta.update(key_check=key_check(new_key), **{ROTATION_META: json.dumps(committed)})
    with database.transaction() as conn:
        _rewrap_all(database, old_key, new_key)
        crash_point("rotate-rewrapped")
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta.items())
    crash_point("rotate-committed")
    finish_rotation(database, key_file)
    retry_while_busy(database.purge_log)  # the old wrapped keys leave no copy in the log


def _new_passphrase(prompt: PassphrasePrompt | None) -> str:
    """Always asked (twice), never taken from ASSISTANT_PASSPHRASE, which holds the old one."""
    if prompt is None:
        raise KeyStoreError(
            "A new passphrase must be typed in a terminal.",
            hint="Run `assistant key rotate` in a terminal.",
        )
    passphrase = prompt(True)
    if not passphrase:
        raise KeyStoreError("An empty passphrase cannot protect your memory.")
    return passphrase


def _require_registered(database: Database) -> None:
    """Refuse to rotate while a BLOB column holding data is missing from the registry: its
    blobs would stay under the old key, and be lost with it."""
    registered = {(sealed.table, sealed.column) for sealed in SEALED_COLUMNS}
    tables = database.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    for (table,) in tables:
        for column in database.execute(f"PRAGMA table_info({table})").fetchall():
            name, declared = column[1], column[2]
            if declared.upper() != "BLOB" or (table, name) in registered | NOT_MASTER_SEALED:
                continue
            if database.execute(f"SELECT 1 FROM {table} WHERE {name} IS NOT NULL").fetchone():
                raise AssistantError(
                    f"The key cannot be rotated: {table}.{name} is not in the registry of"
                    " sealed columns, so its data would be lost with the old key.",
                    hint="Nothing was changed. This is a bug; please report it.",
                )


def _rewrap_all(database: Database, old_key: bytes, new_key: bytes) -> None:
    """Re-seal every blob of every sealed column under the new key (inside the caller's
    transaction); a blob that does not open under the old key stops it all."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    old, new = AESGCM(old_key), AESGCM(new_key)
    for sealed in SEALED_COLUMNS:
        cursor = database.execute(f"SELECT * FROM {sealed.table} WHERE {sealed.column} IS NOT NULL")
        names = [description[0] for description in cursor.description]
        for values in cursor.fetchall():
            row = dict(zip(names, values, strict=True))
            where = f"{sealed.table}.{sealed.column} of row {row[sealed.key]}"
            ad = sealed.ad(row)
            data = unwrap(old, ad, row[sealed.column], f"{where} fails authentication.")
            database.execute(
                f"UPDATE {sealed.table} SET {sealed.column} = ? WHERE {sealed.key} = ?",
                [wrap(new, ad, data), row[sealed.key]],
            )
