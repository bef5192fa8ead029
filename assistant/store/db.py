"""The one SQLite file: connection settings and named migrations.

Migrations follow simonw/llm's pattern: each is a function applied once, in
order, and its name is recorded in ``_migrations``. Never edit a migration that
has shipped; add a new one.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import sqlite_utils

T = TypeVar("T")
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []


def now() -> str:
    """The time a row records: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def migration(
    fn: Callable[[sqlite_utils.Database], None],
) -> Callable[[sqlite_utils.Database], None]:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_memory(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        -- One epoch = the span of memories one sleep consolidates. Its data key
        -- exists only wrapped by the master key; deleting it shreds the epoch.
        CREATE TABLE epochs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            wrapped_key BLOB NOT NULL,
            created_at TEXT NOT NULL,
            sealed_at TEXT
        );
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE turns (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            epoch_id INTEGER NOT NULL REFERENCES epochs(id),
            conversation_id INTEGER NOT NULL REFERENCES conversations(id),
            role TEXT NOT NULL,
            created_at TEXT NOT NULL,
            nonce BLOB NOT NULL,
            ciphertext BLOB NOT NULL
        );
        CREATE INDEX turns_epoch ON turns(epoch_id);
        CREATE INDEX turns_conversation ON turns(conversation_id);
        """
    )


@migration
def m002_models(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE models (
            name TEXT PRIMARY KEY,
            source TEXT NOT NULL,
            architecture TEXT NOT NULL,
            hf_dir TEXT NOT NULL,
            gguf_path TEXT NOT NULL,
            quant TEXT,
            added_at TEXT NOT NULL
        );
        -- Learned LoRA experts; the sleep runner commits rows here.
        CREATE TABLE experts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            model_name TEXT NOT NULL REFERENCES models(name),
            level INTEGER NOT NULL DEFAULT 1,
            scale REAL NOT NULL DEFAULT 1.0,
            status TEXT NOT NULL DEFAULT 'active',
            peft_dir TEXT NOT NULL,
            gguf_path TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        """
    )


@migration
def m003_sleep(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- One row per sleep; the runner's state machine (see assistant.sleep.runner).
        CREATE TABLE sleeps (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            stage TEXT NOT NULL,
            outcome TEXT,
            epochs TEXT NOT NULL DEFAULT '[]',
            expert_id INTEGER,
            -- Sealed under the master key: the report, and the held-out probes kept from
            -- verification until the commit moves them to expert_probes.
            report BLOB,
            probes BLOB
        );
        ALTER TABLE experts ADD COLUMN sleep_id INTEGER;
        ALTER TABLE experts ADD COLUMN rank INTEGER;
        -- What later nights need to check this expert: its held-out probes, sealed.
        CREATE TABLE expert_probes (
            expert_id INTEGER PRIMARY KEY REFERENCES experts(id) ON DELETE CASCADE,
            sealed BLOB NOT NULL
        );
        """
    )


@migration
def m004_adapter_origin(db: sqlite_utils.Database) -> None:
    # 'sleep' for experts a night learned; 'import:<folder>' for adapters brought in.
    db.execute("ALTER TABLE experts ADD COLUMN origin TEXT NOT NULL DEFAULT 'sleep'")


@migration
def m005_sleep_checkpoint(db: sqlite_utils.Database) -> None:
    # A paused night's checkpoint: its file name and encryption key, sealed under the master
    # key. Set to NULL when the night ends, which crypto-shreds the file.
    db.execute("ALTER TABLE sleeps ADD COLUMN checkpoint BLOB")


@migration
def m006_integrity(db: sqlite_utils.Database) -> None:
    # Which associated data a turn was sealed with: 1 (before its time was bound), 2.
    db.execute("ALTER TABLE turns ADD COLUMN ad_version INTEGER NOT NULL DEFAULT 1")
    # A sleep row's stage, epochs and expert, sealed under the master key (sleep/state.py).
    db.execute("ALTER TABLE sleeps ADD COLUMN state_seal BLOB")


@migration
def m007_sealed_experts(db: sqlite_utils.Database) -> None:
    # Experts are sealed files in one directory (assistant.experts.vault); each row holds the
    # expert's wrapped key and its files' hashes. Rows with no key yet are plaintext experts
    # from before: the registry seals them at the next unlock (it needs the master key).
    for column in ("directory TEXT", "hashes TEXT", "wrapped_key BLOB"):
        db.execute(f"ALTER TABLE experts ADD COLUMN {column}")
    for expert_id, gguf_path in db.execute("SELECT id, gguf_path FROM experts").fetchall():
        db.execute(
            "UPDATE experts SET directory = ? WHERE id = ?",
            [str(Path(gguf_path).parent), expert_id],
        )
    for column in ("peft_dir", "gguf_path"):
        db.execute(f"ALTER TABLE experts DROP COLUMN {column}")
    # A night's expert key, sealed, from its files being written until its commit.
    db.execute("ALTER TABLE sleeps ADD COLUMN expert_key BLOB")


@migration
def m008_conversation_holds(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        -- Conversations an open chat app (process pid) is using: shredding keeps them even
        -- when their turns are all gone (assistant.store.memory, delete_epoch).
        CREATE TABLE conversation_holds (
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            pid INTEGER NOT NULL,
            PRIMARY KEY (conversation_id, pid)
        );
        """
    )


@migration
def m009_turn_tries(db: sqlite_utils.Database) -> None:
    # Nights a turn was carried into the next epoch because its note was not yet learned.
    db.execute("ALTER TABLE turns ADD COLUMN tries INTEGER NOT NULL DEFAULT 0")


class Database:
    """A thread-safe handle on the SQLite file with the settings privacy needs.

    ``temp_store=MEMORY`` keeps sort/temp tables off disk, ``secure_delete``
    zeroes freed pages, WAL lets the UI read while a reply is being stored.
    The file, its ``-wal`` and ``-shm`` are created 0600 (SQLite gives the
    latter two the database's mode), never wider for a moment.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self.lock = threading.RLock()
        umask = os.umask(0o077)
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            for pragma in (
                "journal_mode=WAL",
                "temp_store=MEMORY",
                "secure_delete=ON",
                "foreign_keys=ON",
                "busy_timeout=10000",
                "synchronous=FULL",
            ):
                conn.execute(f"PRAGMA {pragma}")
            self.conn = conn
            self.db = sqlite_utils.Database(conn)
            self._migrate()  # the first write: creates -wal and -shm
        finally:
            os.umask(umask)

    def _migrate(self) -> None:
        with self.lock:
            self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY)")
            done = {row[0] for row in self.db.execute("SELECT name FROM _migrations")}
            for fn in MIGRATIONS:
                if fn.__name__ not in done:
                    with self.transaction():
                        fn(self.db)
                        self.db.execute("INSERT INTO _migrations VALUES (?)", [fn.__name__])

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def execute(self, sql: str, params: tuple | list | dict = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, params)

    def purge_log(self) -> int:
        """Copy the WAL into the file and truncate it, so deleted rows (zeroed in the file by
        ``secure_delete``) leave no copy in the log; returns the frames copied."""
        from assistant.errors import DatabaseBusyError

        busy, _, done = self.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise DatabaseBusyError(
                "Could not purge the write-ahead log: another process holds the database."
            )
        return max(int(done), 0)

    def get_meta(self, key: str) -> str | None:
        row = self.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])

    def close(self) -> None:
        with self.lock:
            self.conn.close()


BUSY_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # about 9 s in all


def retry_while_busy(action: Callable[[], T]) -> T:
    """``action``, tried again after a pause while another process keeps the database busy
    (its busy_timeout ran out, or a WAL checkpoint could not finish); then the error."""
    from assistant.errors import DatabaseBusyError

    for delay in BUSY_RETRY_DELAYS:
        try:
            return _locked_as_busy(action)
        except DatabaseBusyError:
            time.sleep(delay)
    return _locked_as_busy(action)


def _locked_as_busy(action: Callable[[], T]) -> T:
    """SQLite's "database is locked" as a DatabaseBusyError."""
    from assistant.errors import DatabaseBusyError

    try:
        return action()
    except sqlite3.OperationalError as error:
        if "is locked" not in str(error):
            raise
        raise DatabaseBusyError("Another process kept the database busy.") from None


def fsync_directory(directory: Path) -> None:
    """Make a directory's entries (files created, renamed or removed in it) durable."""
    if os.name == "nt":  # Windows cannot open a directory; its renames are durable on return
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
