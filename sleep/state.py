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

Each row's state (times, stage, outcome, epochs, expert) is sealed under the master
key in ``state_seal``, so a row edited in the file is refused instead of making a
night shred other epochs or commit a planted expert. Rows written before the seal
existed are sealed as they are the first time a key opens the store (the key
check, re-sealed, marks it done: see ``assistant.store.keys``); after that, a row
without a seal is refused too. What a seal cannot stop: an old, authentic copy of the same row
put back (a rollback of the whole file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assistant.errors import AssistantError, TamperedError
from assistant.sleep.report import INTERRUPTED, SleepReport
from assistant.store.db import Database, now
from assistant.store.lock import SLEEP, StoreBusyError
from assistant.store.memory import MemoryStore
from assistant.store.sealed import sleep_label

if TYPE_CHECKING:
    from assistant.runtime import Runtime

COLLECTING, LEARNING, PAUSED, VERIFIED, COMMITTED, SHREDDING, DONE = (
    "collecting",
    "learning",
    "paused",
    "verified",
    "committed",
    "shredding",
    "done",
)
# A night at one of these stages has a verified expert and finishes on the next run.
AFTER_VERIFICATION = (VERIFIED, COMMITTED, SHREDDING)
# An interrupted sleep that had not verified is closed with this outcome and started afresh.
ABANDONED = "abandoned"


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


_STATE_COLUMNS = ("started_at", "finished_at", "stage", "outcome", "epochs", "expert_id")


def _seal_state(store: MemoryStore, sleep_id: int, state: dict[str, object]) -> bytes:
    data = json.dumps([state[name] for name in _STATE_COLUMNS]).encode()
    return store.seal(sleep_label("state_seal", sleep_id), data)


class SleepLog:
    """Reads and advances the ``sleeps`` table, refusing rows whose state was edited."""

    def __init__(self, database: Database, store: MemoryStore) -> None:
        self.database = database
        self.store = store

    def _seal(self, sleep_id: int, state: dict[str, object]) -> bytes:
        return _seal_state(self.store, sleep_id, state)

    def seal(self, column: str, sleep_id: int, data: bytes) -> bytes:
        """``data`` as the sealed ``column`` of night ``sleep_id``'s row holds it."""
        return self.store.seal(sleep_label(column, sleep_id), data)

    def unseal(self, column: str, sleep_id: int, sealed: bytes) -> bytes:
        return self.store.unseal(sleep_label(column, sleep_id), sealed)

    def report(self, row: SleepRow) -> SleepReport | None:
        """The night's report, unsealed; None before the night has written one."""
        if row.report is None:
            return None
        return SleepReport.from_json(self.unseal("report", row.id, row.report))

    def seal_report(self, report: SleepReport) -> bytes:
        return self.seal("report", report.sleep_id, report.to_json())

    def sealed_expert_key(self, sleep_id: int) -> bytes | None:
        """The verified expert's sealed key and hashes, held in the row until its commit."""
        (sealed,) = self.database.execute(
            "SELECT expert_key FROM sleeps WHERE id = ?", [sleep_id]
        ).fetchone()
        return _blob(sealed)

    @staticmethod
    def last_slept(database: Database) -> str | None:
        """When the last night that ran to its end finished (read without the key: its row's
        seal is checked by the night that reads it, not by whoever asks when)."""
        return database.execute(
            "SELECT MAX(finished_at) FROM sleeps WHERE stage = ? AND outcome NOT IN (?, ?)",
            [DONE, ABANDONED, INTERRUPTED],
        ).fetchone()[0]

    @staticmethod
    def seal_rows_from_before(database: Database, store: MemoryStore) -> None:
        """Seal the rows an older version wrote without a seal (see Runtime.memory)."""
        with database.transaction():
            rows = database.execute(
                f"SELECT id, {', '.join(_STATE_COLUMNS)} FROM sleeps WHERE state_seal IS NULL"
            ).fetchall()
            for sleep_id, *values in rows:
                state = dict(zip(_STATE_COLUMNS, values, strict=True))
                database.execute(
                    "UPDATE sleeps SET state_seal = ? WHERE id = ?",
                    [_seal_state(store, sleep_id, state), sleep_id],
                )

    def _verify(self, sleep_id: int, state: dict[str, object], seal: bytes | None) -> None:
        refused = TamperedError(
            f"The record of sleep {sleep_id} was changed outside the assistant (its stage,"
            " epochs or expert): the night is refused, nothing is shredded or committed.",
        )
        if seal is None:
            raise refused
        try:
            sealed = self.store.unseal(sleep_label("state_seal", sleep_id), seal)
        except TamperedError:
            raise refused from None
        if json.loads(sealed) != [state[name] for name in _STATE_COLUMNS]:
            raise refused

    def _rows(self, where: str, params: list) -> list[SleepRow]:
        rows = self.database.execute(
            f"SELECT id, {', '.join(_STATE_COLUMNS)}, report, probes, state_seal FROM sleeps"
            f" {where}",
            params,
        ).fetchall()
        verified = []
        for sleep_id, *values, report, probes, seal in rows:
            state = dict(zip(_STATE_COLUMNS, values, strict=True))
            self._verify(sleep_id, state, _blob(seal))
            verified.append(
                SleepRow(
                    sleep_id,
                    state["started_at"],
                    state["finished_at"],
                    state["stage"],
                    state["outcome"],
                    json.loads(state["epochs"]),
                    state["expert_id"],
                    _blob(report),
                    _blob(probes),
                )
            )
        return verified

    def start(self) -> int:
        state = dict.fromkeys(_STATE_COLUMNS)
        state.update(started_at=now(), stage=COLLECTING, epochs="[]")
        with self.database.transaction():
            cursor = self.database.execute(
                "INSERT INTO sleeps (started_at, stage) VALUES (?, ?)",
                [state["started_at"], COLLECTING],
            )
            sleep_id = int(cursor.lastrowid)
            self.database.execute(
                "UPDATE sleeps SET state_seal = ? WHERE id = ?",
                [self._seal(sleep_id, state), sleep_id],
            )
        return sleep_id

    def get(self, sleep_id: int) -> SleepRow:
        return self._rows("WHERE id = ?", [sleep_id])[0]

    def unfinished(self) -> list[SleepRow]:
        return self._rows("WHERE stage != ? ORDER BY id", [DONE])

    def last_finished(self) -> SleepRow | None:
        """The last sleep that ended, done or paused."""
        rows = self._rows("WHERE finished_at IS NOT NULL ORDER BY id DESC LIMIT 1", [])
        return rows[0] if rows else None

    def advance(self, sleep_id: int, stage: str, **columns: object) -> None:
        """Set the stage (and any other columns) of a verified sleep row, and its new seal,
        in one statement."""
        if "epochs" in columns:
            columns["epochs"] = json.dumps(columns["epochs"])
        if stage in (DONE, PAUSED):
            columns["finished_at"] = now()
        columns["stage"] = stage
        with self.database.lock:
            row = self.get(sleep_id)
            state = {
                "started_at": row.started_at,
                "finished_at": row.finished_at,
                "stage": row.stage,
                "outcome": row.outcome,
                "epochs": json.dumps(row.epochs),
                "expert_id": row.expert_id,
            }
            state.update((name, value) for name, value in columns.items() if name in state)
            columns["state_seal"] = self._seal(sleep_id, state)
            sets = ", ".join(f"{name} = ?" for name in columns)
            self.database.execute(
                f"UPDATE sleeps SET {sets} WHERE id = ?", [*columns.values(), sleep_id]
            )


def _blob(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


@contextmanager
def sleep_held_off(runtime: Runtime, change: str) -> Iterator[None]:
    """Make a change a night depends on (the active model, its experts) with no night
    running and none waiting to commit: a night learns on one model from start to commit."""
    try:
        lock = runtime.exclusive(change).__enter__()
    except StoreBusyError as busy:
        if busy.holder != SLEEP:
            raise
        raise AssistantError(
            f"A sleep is running, so {change} has to wait: the night learns on the model it"
            " started with.",
            hint="Wait for it to end (`assistant sleep status`) or stop it, then run this again.",
        ) from None
    try:
        marks = ",".join("?" * len(AFTER_VERIFICATION))
        waiting = runtime.database.execute(
            f"SELECT id FROM sleeps WHERE stage IN ({marks})", list(AFTER_VERIFICATION)
        ).fetchone()
        if waiting:
            raise AssistantError(
                f"Sleep {waiting[0]} learned an expert that is not committed yet, so {change}"
                " has to wait.",
                hint="Run `assistant sleep --now` to finish that night first.",
            )
        yield
    finally:
        lock.__exit__()
