"""N1, the transition into sleep: the day's memories are sealed off.

The open epoch is sealed (a high-water mark: what is said from now on waits for
the next night) and the epochs to consolidate are recorded in the sleep's row
before anything reads them, so a crash cannot widen or narrow what the night
will later shred.
"""

from __future__ import annotations

from assistant.sleep import state
from assistant.store.memory import MemoryStore


def begin_night(log: state.SleepLog, store: MemoryStore) -> tuple[int, list[int]]:
    """A new sleep row, with the sealed epochs it consolidates: (sleep id, epochs)."""
    sleep_id = log.start()
    store.seal_epoch()
    epochs = store.sealed_epochs()
    log.advance(sleep_id, state.LEARNING, epochs=epochs)
    return sleep_id, epochs
