"""Retrieval benchmark: does chat put the right note in the prompt, and no note where none helps?

    python bench/retrieval.py [--seeds 0 1 2] [--facts 20] [--updates 2]

No model runs: the day of the recall benchmark's plan is told (its statements go
through sleep's triage, as chat's do) and every held-out question of its facts,
of its never-told slots and of the general questions is put to chat's index.
Prints JSON per seed and in all: the share of fact questions whose one retrieved
note is the fact's latest statement (``right_note``), and the shares of never-told
and general questions that get any note at all (``unknown_with_note``,
``world_with_note``: lower is better), with a few misses quoted.
"""

from __future__ import annotations

import argparse
import json

from assistant.prompting import NOTES_PER_MESSAGE
from assistant.recall.benchmark import SPLIT, RecallSettings, plan
from assistant.recall.world import WORLD_QUESTIONS
from assistant.retrieval import MemoryIndex
from assistant.sleep.triage import about_the_user

MISSES_QUOTED = 6


def measure(seed: int, facts: int, updates: int) -> dict:
    day = plan(
        RecallSettings(seed=seed, nights=1, facts_per_night=facts, updates_per_night=updates)
    )[0]
    said = [text for turns in day.conversations for text in turns]
    index = MemoryIndex([text for text in said if about_the_user(text)])
    # Each fact's latest statement (an update's comes last, so it wins).
    latest = {fact.slot.key: text for fact, text in day.statements.items()}
    right = asked = 0
    misses = []
    for fact in day.facts:
        for question in fact.slot.phrasings(SPLIT).questions:
            got = index.select(question, NOTES_PER_MESSAGE)
            asked += 1
            if got == [latest[fact.slot.key]]:
                right += 1
            elif len(misses) < MISSES_QUOTED:
                misses.append([question, got])
    unknown = [q for slot in day.unknown for q in slot.phrasings(SPLIT).questions]
    unknown_noted = [q for q in unknown if index.select(q, NOTES_PER_MESSAGE)]
    world_noted = [w.question for w in WORLD_QUESTIONS if index.select(w.question, 1)]
    return {
        "right_note": round(right / asked, 4),
        "unknown_with_note": round(len(unknown_noted) / len(unknown), 4),
        "world_with_note": round(len(world_noted) / len(WORLD_QUESTIONS), 4),
        "asked": asked,
        "misses": misses,
        "unknown_noted": unknown_noted[:MISSES_QUOTED],
        "world_noted": world_noted[:MISSES_QUOTED],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--updates", type=int, default=2)
    args = parser.parse_args()
    runs = {seed: measure(seed, args.facts, args.updates) for seed in args.seeds}
    keys = ("right_note", "unknown_with_note", "world_with_note")
    overall = {k: round(sum(r[k] for r in runs.values()) / len(runs), 4) for k in keys}
    print(json.dumps({"benchmark": "retrieval", "overall": overall, "seeds": runs}, indent=1))


if __name__ == "__main__":
    main()
