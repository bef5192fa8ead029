"""The sleep's persistent state: one row per sleep in SQLite, and the lock that allows one.

Stages, in order (each is recorded before the work that depends on it):

``collecting``  the open epoch is sealed (high-water mark) and the epochs to consolidate recorded
``learning``    N2 + N3 + verification run in RAM; nothing durable but a staged directory
``paused``      stopped when its conditions ended (outcome ``interrupted``); its encrypted
                checkpoint waits, and the next run resumes from it
``verified``    the expert's files are complete at their final path and passed verification
``committed``   the expert's registry row and probe set exist (one transaction with this stage)
``shredding``   the consolidated epochs are being deleted
``done``        finished; ``outcome`` says how

A crash before ``verified`` loses nothing (the epochs are untouched) and the
next run starts over (or resumes a paused night); from ``verified`` on, the
next run finishes the job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from assistant.errors import AssistantError
from assistant.store.db import Database

COLLECTING, LEARNING, PAUSED, VERIFIED, COMMITTED, SHREDDING, DONE = (
    "collecting",
    "learning",
    "paused",
    "verified",
    "committed",
    "shredding",
    "done",
)
# An interrupted sleep that had not verified is closed with this outcome and started afresh.
ABANDONED = "abandoned"


class SleepBusyError(AssistantError):
    hint = "Wait for it to finish (see `assistant sleep status`), then run it again if needed."


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SleepRow:
    id: int
    started_at: str
    finished_at: str | None
    stage: str
    outcome: str | None
    epochs: list[int]
    expert_id: int | None
    report: bytes | None
    probes: bytes | None


class SleepLog:
    """Reads and advances the ``sleeps`` table."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def _rows(self, where: str, params: list) -> list[SleepRow]:
        rows = self.database.execute(
            "SELECT id, started_at, finished_at, stage, outcome, epochs, expert_id, report,"
            f" probes FROM sleeps {where}",
            params,
        ).fetchall()
        return [
            SleepRow(i, s, f, st, o, json.loads(e), x, _blob(r), _blob(p))
            for i, s, f, st, o, e, x, r, p in rows
        ]

    def start(self) -> int:
        cursor = self.database.execute(
            "INSERT INTO sleeps (started_at, stage) VALUES (?, ?)", [now(), COLLECTING]
        )
        return int(cursor.lastrowid)

    def get(self, sleep_id: int) -> SleepRow:
        return self._rows("WHERE id = ?", [sleep_id])[0]

    def unfinished(self) -> list[SleepRow]:
        return self._rows("WHERE stage != ? ORDER BY id", [DONE])

    def last_finished(self) -> SleepRow | None:
        """The last sleep that ended, done or paused."""
        rows = self._rows("WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1", [])
        return rows[0] if rows else None

    def advance(self, sleep_id: int, stage: str, **columns: object) -> None:
        """Set the stage (and any other columns) of a sleep in one statement."""
        if "epochs" in columns:
            columns["epochs"] = json.dumps(columns["epochs"])
        if stage in (DONE, PAUSED):
            columns["finished_at"] = now()
        sets = ", ".join(f"{name} = ?" for name in ["stage", *columns])
        self.database.execute(
            f"UPDATE sleeps SET {sets} WHERE id = ?", [stage, *columns.values(), sleep_id]
        )


def _blob(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


class SleepLock:
    """An OS file lock: released by the kernel if the process dies, so it never goes stale."""

    def __init__(self, path: Path) -> None:
        from filelock import FileLock

        self.path = path
        self._lock = FileLock(path, mode=0o600)

    def __enter__(self) -> SleepLock:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise SleepBusyError("Another sleep is already running for this memory.") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def sleep_running(lock_path: Path) -> bool:
    """Whether a sleep (or a reset or import) holds the lock right now."""
    try:
        with SleepLock(lock_path):
            return False
    except SleepBusyError:
        return True
