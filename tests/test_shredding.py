"""Shredding next to an open chat: held conversations survive, a busy database is waited for."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

SHRED_IN_ANOTHER_PROCESS = """
from assistant.runtime import Runtime

store = Runtime().memory
store.delete_epoch(store.seal_epoch())
"""


def shred_in_another_process() -> None:
    """The shredding a sleep does (sleep/wake.py calls delete_epoch), in its own process."""
    done = subprocess.run(
        [sys.executable, "-c", SHRED_IN_ANOTHER_PROCESS], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def _conversation_ids(runtime) -> list[int]:
    return [c.id for c in runtime.memory.conversations()]


def test_a_held_conversation_survives_ashred_in_another_process(runtime):
    store = runtime.memory
    held = store.new_conversation(held=True)
    store.append(held, "user", "I am still talking here.")
    loose = store.new_conversation()
    store.append(loose, "user", "Nobody has this one open.")

    shred_in_another_process()

    assert store.count() == 0
    assert _conversation_ids(runtime) == [held]
    store.append(held, "user", "And I go on.")  # the open chat keeps working
    store.release_conversation(held)
    shred_in_another_process()
    assert _conversation_ids(runtime) == []


def test_a_hold_left_by_a_dead_process_does_not_keep_a_conversation(runtime):
    store = runtime.memory
    conversation = store.new_conversation()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    runtime.database.execute(
        "INSERT INTO conversation_holds (conversation_id, pid) VALUES (?, ?)",
        [conversation, int(gone.stdout)],
    )
    shred_in_another_process()
    assert _conversation_ids(runtime) == []


def test_holding_a_conversation_a_sleep_already_removed_is_a_clear_error(runtime):
    from assistant.errors import AssistantError

    store = runtime.memory
    conversation = store.new_conversation()
    shred_in_another_process()
    with pytest.raises(AssistantError, match="no longer exists") as raised:
        store.hold_conversation(conversation)
    assert "new one" in raised.value.hint


@pytest.mark.parametrize("lock", ["BEGIN", "BEGIN IMMEDIATE"], ids=["reader", "writer"])
def test_a_busy_database_is_waited_for_then_shredded(runtime, lock):
    store = runtime.memory
    conversation = store.new_conversation()
    store.append(conversation, "user", "to be shredded")
    epoch = store.seal_epoch()
    runtime.database.execute("PRAGMA busy_timeout = 100")  # each attempt gives up quickly
    other = sqlite3.connect(runtime.paths.database, isolation_level=None, check_same_thread=False)
    other.execute(lock)
    other.execute("SELECT count(*) FROM turns").fetchone()  # a snapshot on the WAL
    release = threading.Timer(1.0, other.execute, ["COMMIT"])
    release.start()
    started = time.monotonic()
    try:
        report = store.delete_epoch(epoch)
    finally:
        release.join()
        other.close()
    assert time.monotonic() - started >= 1.0
    assert (report.turns_deleted, report.vacuumed) == (1, True)
    assert store.count() == 0
    assert os.path.getsize(f"{runtime.paths.database}-wal") == 0
