"""Memory store speed: encrypted append and decrypt-all against plain sqlite-utils, same run.

    python bench/memory_store.py [--turns 10000] [--appends 2000]

Prints JSON. Both sides use the same SQLite file settings (WAL, synchronous=FULL,
secure_delete), one transaction per append, the same message texts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from assistant.store.db import Database
from assistant.store.memory import MemoryStore

MESSAGE = "I moved to Lisbon last spring and my sister Ana visits every other weekend. " * 2


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p99_us": ordered[int(0.99 * (len(ordered) - 1))] * 1e6,
    }


def bench(turns: int, appends: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ours_db = Database(Path(tmp) / "ours.db")
        store = MemoryStore(ours_db, b"\x01" * 32)
        conversation = store.new_conversation()
        plain_db = Database(Path(tmp) / "plain.db")
        plain_db.execute(
            "CREATE TABLE plain_turns (id INTEGER PRIMARY KEY, conversation_id INTEGER,"
            " role TEXT, created_at TEXT, text TEXT)"
        )
        plain_table = plain_db.db["plain_turns"]

        def plain_append(text: str) -> None:
            with plain_db.transaction():
                row = {"conversation_id": conversation, "role": "user", "created_at": "now"}
                plain_table.insert({**row, "text": text})

        ours, plain = [], []
        for i in range(turns):
            text = f"{i} {MESSAGE}"
            start = time.perf_counter()
            store.append(conversation, "user", text)
            middle = time.perf_counter()
            plain_append(text)  # interleaved so both see the same machine noise
            if i < appends:  # the rest only fills the tables for the read test
                ours.append(middle - start)
                plain.append(time.perf_counter() - middle)

        start = time.perf_counter()
        decrypted = store.unconsolidated()
        ours_read = time.perf_counter() - start
        start = time.perf_counter()
        rows = plain_db.execute(
            "SELECT id, conversation_id, role, created_at, text FROM plain_turns"
        ).fetchall()
        plain_read = time.perf_counter() - start
        assert len(decrypted) == len(rows) == turns

    ours_stats, plain_stats = _percentiles(ours), _percentiles(plain)
    return {
        "benchmark": "memory_store",
        "appends": appends,
        "append_encrypted": ours_stats,
        "append_plain_sqlite_utils": plain_stats,
        "append_overhead_median": ours_stats["median_us"] / plain_stats["median_us"] - 1,
        "append_overhead_p99": ours_stats["p99_us"] / plain_stats["p99_us"] - 1,
        "read_turns": turns,
        "decrypt_all_turns_per_s": turns / ours_read,
        "plain_read_turns_per_s": turns / plain_read,
        "read_slowdown": ours_read / plain_read,
        "goal": "append overhead < 0.30",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10_000)
    parser.add_argument("--appends", type=int, default=2_000)
    args = parser.parse_args()
    print(json.dumps(bench(args.turns, args.appends), indent=2))


if __name__ == "__main__":
    main()
