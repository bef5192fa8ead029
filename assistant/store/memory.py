"""Encrypted episodic memory: every chat turn, AES-256-GCM, in SQLite.

Each epoch (the span one sleep consolidates) has its own random data key,
stored only wrapped by the master key. Each turn is sealed under its epoch key
with associated data binding its row id, epoch, conversation, role and time, so a
row edited, moved or swapped in the file fails to decrypt. Deleting an epoch
removes its rows and its wrapped key (crypto-shredding), then checkpoints the
WAL and vacuums so no page with the old ciphertext lingers. Turns a night did not
learn are carried out of the epoch first: sealed anew under the open epoch's key
in the same transaction.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass
from typing import TypeVar

from assistant.errors import (
    AssistantError,
    InvalidMessageError,
    KeyStoreError,
    TamperedError,
)
from assistant.faults import crash_point
from assistant.store.db import Database, now, retry_while_busy
from assistant.store.sealed import epoch_ad, record_ad, unwrap, wrap

T = TypeVar("T")

ROLES = ("user", "assistant")
MAX_MESSAGE_CHARS = 32_768
VACUUM_LIMIT_BYTES = 512 * 1024 * 1024
# Seconds to wait between tries while another connection keeps the database busy during a
# shred (each try also waits the connection's busy_timeout); then a clear error.


@dataclass(frozen=True)
class Turn:
    id: int
    conversation_id: int
    epoch_id: int
    role: str
    text: str
    created_at: str
    tries: int = 0  # nights it was carried, its note not yet learned


@dataclass(frozen=True)
class Conversation:
    id: int
    created_at: str
    turn_count: int


@dataclass(frozen=True)
class ShredReport:
    epoch_id: int
    turns_deleted: int
    turns_carried: int
    wal_frames_checkpointed: int
    vacuumed: bool


def validate_message(text: str) -> str:
    """Refuse text that cannot be stored faithfully or is too long to be a message."""
    if not isinstance(text, str):
        raise InvalidMessageError("A message must be text.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise InvalidMessageError(
            f"The message is {len(text):,} characters long; the limit is {MAX_MESSAGE_CHARS:,}.",
            hint="Split it into smaller messages.",
        )
    if "\x00" in text:
        raise InvalidMessageError("The message contains NUL bytes; it looks like binary data.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessageError(
            "The message contains bytes that are not valid UTF-8 text.",
            hint="Check the encoding of the input (it must be UTF-8).",
        ) from None
    if any(unicodedata.category(ch) == "Cc" and ch not in "\t\n\r" for ch in text):
        raise InvalidMessageError("The message contains control characters.")
    if not text.strip():
        raise InvalidMessageError("The message is empty.")
    return text


# The AD of the turns written from now on; rows keep the version they were sealed with.
TURN_AD_VERSION = 2


def _turn_ad(
    version: int, turn_id: int, epoch_id: int, conversation_id: int, role: str, created_at: str
) -> bytes:
    """v2 binds the time too; v1 (rows written before it) did not. A row's ``ad_version``
    cannot be lowered to dodge the time check: GCM opens a row only under the exact AD it
    was sealed with, so a v2 row relabelled v1 fails like any other edit."""
    if version == 1:
        return f"assistant/turn/v1:{turn_id}:{epoch_id}:{conversation_id}:{role}".encode()
    return f"assistant/turn/v2:{turn_id}:{epoch_id}:{conversation_id}:{role}:{created_at}".encode()


class MemoryStore:
    """Append, read back and shred encrypted turns. Thread-safe through the database lock."""

    def __init__(self, database: Database, master_key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.database = database
        self._master = AESGCM(master_key)
        self._key_check = database.get_meta("key_check")
        self._epoch_ciphers: dict[int, AESGCM] = {}

    # -- epochs -------------------------------------------------------------
    def _next_id(self, table: str) -> int:
        row = self.database.execute(
            f"SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = ?), 0),"
            f" coalesce((SELECT max(id) FROM {table}), 0)) + 1",
            [table],
        ).fetchone()
        return int(row[0])

    def open_epoch(self) -> int:
        """The epoch new turns go into, created on demand."""
        with self.database.transaction():
            return self._open_epoch_in_transaction()

    def _open_epoch_in_transaction(self) -> int:
        row = self.database.execute(
            "SELECT id FROM epochs WHERE sealed_at IS NULL ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row:
            return int(row[0])
        epoch_id = self._next_id("epochs")
        wrapped = self._wrap(epoch_ad(epoch_id), os.urandom(32))
        self.database.execute(
            "INSERT INTO epochs (id, wrapped_key, created_at) VALUES (?, ?, ?)",
            [epoch_id, wrapped, now()],
        )
        return epoch_id

    def seal_epoch(self) -> int | None:
        """Close the open epoch so later turns start a new one (a sleep's high-water mark)."""
        with self.database.transaction():
            row = self.database.execute(
                "SELECT id FROM epochs WHERE sealed_at IS NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if not row:
                return None
            self.database.execute("UPDATE epochs SET sealed_at = ? WHERE id = ?", [now(), row[0]])
            return int(row[0])

    def epochs(self) -> list[int]:
        return [int(r[0]) for r in self.database.execute("SELECT id FROM epochs ORDER BY id")]

    def sealed_epochs(self) -> list[int]:
        """Epochs closed by a sleep's high-water mark and not yet shredded."""
        rows = self.database.execute(
            "SELECT id FROM epochs WHERE sealed_at IS NOT NULL ORDER BY id"
        )
        return [int(r[0]) for r in rows]

    def _epoch_cipher(self, epoch_id: int):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        cipher = self._epoch_ciphers.get(epoch_id)
        if cipher is None:
            row = self.database.execute(
                "SELECT wrapped_key FROM epochs WHERE id = ?", [epoch_id]
            ).fetchone()
            if row is None:
                raise TamperedError(f"Epoch {epoch_id} has no key: its memories were shredded.")
            key = self._unwrap(
                epoch_ad(epoch_id), row[0], f"The key of epoch {epoch_id} does not decrypt."
            )
            cipher = self._epoch_ciphers[epoch_id] = AESGCM(key)
        return cipher

    # -- anything else sealed under the master key ------------------------------
    def _wrap(self, ad: bytes, data: bytes) -> bytes:
        self._require_current_key()
        return wrap(self._master, ad, data)

    def _unwrap(self, ad: bytes, sealed: bytes, failure: str) -> bytes:
        try:
            return unwrap(self._master, ad, sealed, failure)
        except TamperedError:
            self._require_current_key()
            raise

    def _require_current_key(self) -> None:
        """Refuse to seal under a master key that `key rotate` (another process) replaced:
        nothing could open it afterwards."""
        if self.database.get_meta("key_check") != self._key_check:
            raise KeyStoreError(
                "The memory key was changed (assistant key rotate) after this was opened.",
                hint="Close and reopen the assistant to use the new key.",
            )

    def seal(self, label: str, data: bytes) -> bytes:
        """Encrypt a private record (a sleep report, a probe set) bound to ``label``, its row."""
        return self._wrap(record_ad(label), data)

    def unseal(self, label: str, sealed: bytes) -> bytes:
        return self._unwrap(
            record_ad(label), sealed, f"The sealed record {label} fails authentication."
        )

    # -- conversations and turns ---------------------------------------------
    def new_conversation(self, held: bool = False) -> int:
        """A new conversation; ``held`` holds it in the same transaction (no shred between)."""
        with self.database.transaction():
            cursor = self.database.execute(
                "INSERT INTO conversations (created_at) VALUES (?)", [now()]
            )
            conversation_id = int(cursor.lastrowid)
            if held:
                self._hold(conversation_id)
            return conversation_id

    def hold_conversation(self, conversation_id: int) -> None:
        """Keep a conversation through shredding while this process lives (an open chat).

        The hold is a row in the database, so a sleep in another process sees it in the
        very transaction that removes emptied conversations; a dead process's hold is
        dropped by the next shred.
        """
        with self.database.transaction():
            exists = self.database.execute(
                "SELECT 1 FROM conversations WHERE id = ?", [conversation_id]
            ).fetchone()
            if not exists:
                raise AssistantError(
                    f"Conversation #{conversation_id} no longer exists: a sleep cleared it.",
                    hint="Pick another conversation or start a new one.",
                )
            self._hold(conversation_id)

    def release_conversation(self, conversation_id: int) -> None:
        self.database.execute(
            "DELETE FROM conversation_holds WHERE conversation_id = ? AND pid = ?",
            [conversation_id, os.getpid()],
        )

    def _hold(self, conversation_id: int) -> None:
        self.database.execute(
            "INSERT OR IGNORE INTO conversation_holds (conversation_id, pid) VALUES (?, ?)",
            [conversation_id, os.getpid()],
        )

    def conversations(self) -> list[Conversation]:
        rows = self.database.execute(
            "SELECT c.id, c.created_at, count(t.id) FROM conversations c"
            " LEFT JOIN turns t ON t.conversation_id = c.id GROUP BY c.id ORDER BY c.id"
        )
        return [Conversation(int(i), created, int(n)) for i, created, n in rows]

    def append(self, conversation_id: int, role: str, text: str) -> Turn:
        """Encrypt and store one turn; either the whole turn is stored or nothing is."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        validate_message(text)
        created = now()
        with self.database.transaction():
            epoch_id = self._open_epoch_in_transaction()
            cipher = self._epoch_cipher(epoch_id)
            exists = self.database.execute(
                "SELECT 1 FROM conversations WHERE id = ?", [conversation_id]
            ).fetchone()
            if not exists:
                raise ValueError(f"no conversation {conversation_id}")
            turn_id = self._next_id("turns")
            nonce = os.urandom(12)
            ad = _turn_ad(TURN_AD_VERSION, turn_id, epoch_id, conversation_id, role, created)
            sealed = cipher.encrypt(nonce, text.encode("utf-8"), ad)
            self.database.execute(
                "INSERT INTO turns (id, epoch_id, conversation_id, role, created_at, nonce,"
                " ciphertext, ad_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [turn_id, epoch_id, conversation_id, role, created, nonce, sealed, TURN_AD_VERSION],
            )
        return Turn(turn_id, conversation_id, epoch_id, role, text, created)

    def _read(self, where: str = "", params: tuple | list = ()) -> list[Turn]:
        from cryptography.exceptions import InvalidTag

        rows = self.database.execute(
            "SELECT id, epoch_id, conversation_id, role, created_at, nonce, ciphertext,"
            f" ad_version, tries FROM turns {where} ORDER BY id",
            params,
        ).fetchall()
        turns = []
        for turn_id, epoch_id, conversation, role, created, nonce, sealed, version, tries in rows:
            ad = _turn_ad(version, turn_id, epoch_id, conversation, role, created)
            try:
                plain = self._epoch_cipher(epoch_id).decrypt(bytes(nonce), bytes(sealed), ad)
            except InvalidTag:
                raise TamperedError(
                    f"Memory row {turn_id} was modified or moved: it fails authentication."
                ) from None
            text = plain.decode()
            turns.append(Turn(turn_id, conversation, epoch_id, role, text, created, tries))
        return turns

    def unconsolidated(self, epoch_ids: list[int] | None = None) -> list[Turn]:
        """Every stored turn not yet consolidated by a sleep (optionally of some epochs)."""
        if epoch_ids is None:
            return self._read()
        marks = ",".join("?" * len(epoch_ids))
        return self._read(f"WHERE epoch_id IN ({marks})", epoch_ids)

    def conversation(self, conversation_id: int) -> list[Turn]:
        return self._read("WHERE conversation_id = ?", [conversation_id])

    def first_messages(self) -> dict[int, str]:
        """Each conversation's first turn, decrypted: what names it in a list."""
        firsts = "SELECT min(id) FROM turns GROUP BY conversation_id"
        return {t.conversation_id: t.text for t in self._read(f"WHERE id IN ({firsts})")}

    def count(self) -> int:
        return int(self.database.execute("SELECT count(*) FROM turns").fetchone()[0])

    # -- shredding ------------------------------------------------------------
    def delete_epoch(self, epoch_id: int, keep: Collection[int] = ()) -> ShredReport:
        """Delete an epoch's turns and wrapped key, then purge the WAL and free pages; the
        turns ``keep`` names are carried into the open epoch first, in the same transaction.

        Conversations left without turns go too, unless an open chat holds them. While
        another connection keeps the database busy, each step is tried again after a pause.
        A second call for an epoch already deleted does nothing.
        """
        deleted, carried = retry_while_busy(lambda: self._delete_rows(epoch_id, keep))
        self._epoch_ciphers.pop(epoch_id, None)
        frames, vacuumed = retry_while_busy(self._purge)
        return ShredReport(epoch_id, deleted, carried, frames, vacuumed)

    def _delete_rows(self, epoch_id: int, keep: Collection[int]) -> tuple[int, int]:
        with self.database.transaction():
            self._drop_holds_of_dead_processes()
            carried = self._carry(epoch_id, keep)
            crash_point("carrying")
            deleted = self.database.execute(
                "DELETE FROM turns WHERE epoch_id = ?", [epoch_id]
            ).rowcount
            self.database.execute("DELETE FROM epochs WHERE id = ?", [epoch_id])
            self.database.execute(
                "DELETE FROM conversations WHERE id NOT IN"
                " (SELECT conversation_id FROM turns)"
                " AND id NOT IN (SELECT conversation_id FROM conversation_holds)"
            )
        return deleted, carried

    def _carry(self, epoch_id: int, keep: Collection[int]) -> int:
        """Seal the turns of ``epoch_id`` that ``keep`` names anew in the open epoch (same id,
        conversation, role and time; a new nonce under the new key), one more try each."""
        if not keep:
            return 0
        marks = ",".join("?" * len(keep))
        turns = self._read(f"WHERE epoch_id = ? AND id IN ({marks})", [epoch_id, *keep])
        if not turns:
            return 0
        target = self._open_epoch_in_transaction()
        if target == epoch_id:
            raise ValueError(f"epoch {epoch_id} is open: only a sealed epoch is shredded")
        cipher = self._epoch_cipher(target)
        for turn in turns:
            nonce = os.urandom(12)
            ad = _turn_ad(
                TURN_AD_VERSION, turn.id, target, turn.conversation_id, turn.role, turn.created_at
            )
            self.database.execute(
                "UPDATE turns SET epoch_id = ?, nonce = ?, ciphertext = ?, ad_version = ?,"
                " tries = tries + 1 WHERE id = ?",
                [
                    target,
                    nonce,
                    cipher.encrypt(nonce, turn.text.encode(), ad),
                    TURN_AD_VERSION,
                    turn.id,
                ],
            )
        return len(turns)

    def _drop_holds_of_dead_processes(self) -> None:
        import psutil

        pids = [
            int(r[0]) for r in self.database.execute("SELECT DISTINCT pid FROM conversation_holds")
        ]
        for pid in pids:
            if not psutil.pid_exists(pid):
                self.database.execute("DELETE FROM conversation_holds WHERE pid = ?", [pid])

    def _purge(self) -> tuple[int, bool]:
        """Checkpoint the WAL and vacuum, so no page keeps the deleted ciphertext."""
        frames = self.database.purge_log()
        vacuumed = self.database.path.stat().st_size <= VACUUM_LIMIT_BYTES
        if vacuumed:
            self.database.execute("VACUUM")
            frames += self.database.purge_log()
        return frames, vacuumed
