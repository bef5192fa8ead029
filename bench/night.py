"""The night lab: one night on the starter in minutes, to measure how a night teaches.

    python bench/night.py [--seed 0] [--facts 10] [--updates 0] [--unknown 10]
                          [--world 20] [--gates real|open] [--backend auto|torch|mlx]
                          [--set sleep_steps=60 --set sleep_negatives=48 ...]
                          [--model FILE.gguf|HF_DIR]

In a throwaway home (a random key; your own memory is not touched) the recall
benchmark's fictional user tells a day of facts in the benchmark's held-out
words (``assistant.recall.benchmark.plan``); then one `sleep --now` with the
config ``--set`` gives (``--gates open`` also opens every verification gate, so
the expert is committed whatever it learned); then, in fresh conversations with
no notes, the benchmark's own questions about the day, never-told questions, and
``--world`` general questions the model answered right before the night.

Prints JSON: the night's report (held-out recall and anchor drift at each check,
the verification, each note's held-out probes right, steps, seconds per stage),
what the product's gates say of it (and the share of notes they would commit),
closed-book recall, updates,
abstention and leak on the benchmark's questions after the night, the wrong
answers, world knowledge kept, and seconds per stage of the lab.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from assistant.config import Config
from assistant.recall.benchmark import (
    RecallBenchmark,
    RecallSettings,
    Tally,
    benchmark_runtime,
    night_questions,
    plan,
)
from assistant.recall.world import WORLD_QUESTIONS

# What `--gates open` sets: no verification gate refuses the expert.
OPEN_GATES = {
    "sleep_min_recall": 0.0,
    "sleep_min_retention": 0.0,
    "sleep_max_leak": 1.0,
    "sleep_max_anchor_divergence": 1e9,
}


def overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as config settings, each value of its field's type."""
    types = {f.name: f.type for f in fields(Config)}
    settings = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in types:
            sys.exit(f"--set {pair}: no such setting; known: {', '.join(sorted(types))}")
        kind = types[key].split(" | ")[0]
        settings[key] = {"int": int, "float": float, "str": str}[kind](value)
    return settings


def real_gates(night: dict) -> dict:
    """What the product's gates say of the night's verification (with ``--gates open`` the
    expert was committed whatever they say): the verdict ("passed", or the reason it would be
    refused) and the share of the night's notes the expert would commit."""
    from assistant.sleep import verify

    if night.get("anchor_divergence") is None:
        return {"verdict": f"not verified ({night['outcome']}: {night['reason']})"}
    by_note = {
        str(i): [True] * right + [False] * (asked - right)
        for i, (right, asked) in enumerate(night["note_recall"])
    }
    checks = verify.Checks(
        night["recall"], night["leak"], night["retention"], night["anchor_divergence"], [], by_note
    )
    verdict = verify.judge(checks, verify.Thresholds.of(Config()))
    committed = len(verdict.learned) / len(by_note) if by_note else None
    return {
        "verdict": "passed" if verdict.passed else verdict.reason,
        "notes_committed": None if committed is None else round(committed, 4),
    }


def run(args: argparse.Namespace) -> dict:
    from assistant.models.starter import starter_gguf
    from assistant.sleep.options import SleepOptions
    from assistant.sleep.runner import SleepRunner

    settings = {**overrides(args.set), **(OPEN_GATES if args.gates == "open" else {})}
    recall = RecallSettings(
        args.seed, 1, args.facts, args.updates, args.unknown, facts_per_conversation=5
    )
    (day,) = plan(recall)
    told = day.facts + day.updates
    seconds: dict[str, float] = {}
    night: dict = {}

    def timed(stage: str, started: float) -> None:
        seconds[stage] = round(time.perf_counter() - started, 2)

    def sleep_now(runtime) -> dict:
        options = SleepOptions(seed=args.seed, backend=args.backend)
        night.update(SleepRunner(runtime, options, lambda line: None).run().to_dict())
        return {"outcome": night["outcome"]}

    model = Path(args.model) if args.model else starter_gguf()
    with benchmark_runtime(model, "model", settings) as runtime:
        bench = RecallBenchmark(runtime, recall, sleep_now)
        bench.wordings = day.wordings
        started = time.perf_counter()
        known = bench.world_knowledge(WORLD_QUESTIONS[: args.world])
        timed("world_before", started)
        started = time.perf_counter()
        bench.tell(day)
        timed("tell", started)
        started = time.perf_counter()
        bench.consolidate(1)
        timed("night", started)
        current = {fact.slot.key: fact for fact in told}
        questions = night_questions(day, current, [], told)
        tally = Tally()
        started = time.perf_counter()
        bench.ask(questions.after, tally, with_memories=False)
        timed("ask_after", started)
        started = time.perf_counter()
        answered = bench.world_answers(known)
        timed("world_after", started)
        kept = [item for item, _, right in answered if right]
        forgotten = [{"question": i.question, "answer": a} for i, a, right in answered if not right]
        bench.close_engine()
    return {
        "seed": args.seed,
        "facts": args.facts,
        "updates": args.updates,
        "gates": args.gates,
        "settings": settings,
        "night": night,
        "real_gates": real_gates(night),
        "after": tally.rates(),
        "after_by_wording": tally.rates_by_wording(),
        "world_knowledge_retained": round(len(kept) / len(known), 4) if known else None,
        "world_known_before": len(known),
        "world_forgotten": forgotten,
        "failures": tally.failures,
        "seconds": {**seconds, "all": round(sum(seconds.values()), 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--facts", type=int, default=10)
    parser.add_argument("--updates", type=int, default=0)
    parser.add_argument("--unknown", type=int, default=10, help="never-told questions")
    parser.add_argument("--world", type=int, default=20, help="general questions asked")
    parser.add_argument("--gates", choices=["real", "open"], default="real")
    parser.add_argument("--backend", choices=["auto", "torch", "mlx"], help="default: the config's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--model", help="a .gguf file or HF directory (default: the starter)")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
