"""Shredding next to an open chat: held conversations survive, a busy database is waited for,
turns a night did not learn are carried to the next epoch whole or not at all."""

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


CARRY_IN_ANOTHER_PROCESS = """
import sys
from assistant.runtime import Runtime

store = Runtime().memory
store.delete_epoch(int(sys.argv[1]), keep=[int(sys.argv[2])])
"""


def _carry_in_another_process(epoch: int, turn: int, crash_at: str | None) -> int:
    from assistant.faults import CRASH_ENV

    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-c", CARRY_IN_ANOTHER_PROCESS, str(epoch), str(turn)]
    return subprocess.run(command, env=env, capture_output=True, text=True).returncode


def _state(runtime) -> list[tuple]:
    return [
        (t.id, t.epoch_id, t.conversation_id, t.role, t.text, t.created_at, t.tries)
        for t in runtime.memory.unconsolidated()
    ]


def test_a_turn_not_yet_learned_is_carried_into_the_open_epoch_or_left_where_it_was(runtime):
    from tests.test_memory import _files_contain

    store = runtime.memory
    conversation = store.new_conversation()
    kept = store.append(conversation, "user", "My sister is called Ramona-5521.")
    store.append(conversation, "assistant", "Ramona-5521, noted.")
    store.append(conversation, "user", "My dog is called Zorblax-4417.")
    epoch = store.seal_epoch()
    old_ciphertext = runtime.database.execute(
        "SELECT ciphertext FROM turns WHERE id = ?", [kept.id]
    ).fetchone()[0]
    before = _state(runtime)

    # Killed inside the carry's transaction: nothing moved, nothing deleted.
    assert _carry_in_another_process(epoch, kept.id, crash_at="carrying") == -9
    assert _state(runtime) == before

    assert _carry_in_another_process(epoch, kept.id, crash_at=None) == 0
    (carried,) = store.unconsolidated()
    assert carried.epoch_id not in store.sealed_epochs() and carried.epoch_id != epoch
    assert (carried.id, carried.conversation_id, carried.text, carried.created_at) == (
        kept.id,
        conversation,
        kept.text,
        kept.created_at,
    )
    assert carried.tries == 1 and store.epochs() == [carried.epoch_id]
    assert [t.text for t in store.conversation(conversation)] == [kept.text]
    # Sealed anew: the old ciphertext is gone from every file.
    assert _files_contain(runtime.paths.data_dir, bytes(old_ciphertext)) == []
    # Done once, the carry is not done twice.
    assert _carry_in_another_process(epoch, kept.id, crash_at=None) == 0
    assert [(t.id, t.tries) for t in store.unconsolidated()] == [(kept.id, 1)]
