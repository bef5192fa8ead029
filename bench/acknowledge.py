"""Acknowledgement benchmark: does the reply to a told fact repeat its value, and only it?

    python bench/acknowledge.py [--seeds 0 1] [--facts 20]

Each statement of the recall benchmark's plan (held-out phrasings) gets a reply
in a fresh conversation, written four ways: by the model alone, by the model
after the prefix "Got it. ", by the model after one worked turn, and as chat
writes it (``prompting.acknowledgement``, the statement said back). Prints
JSON: per way, the share of replies naming the told value and no other value
of the day, the seconds it took, and a few replies that did not.
"""

from __future__ import annotations

import argparse
import json
import time

from assistant.models.starter import starter_gguf
from assistant.prompting import SYSTEM_PROMPT, acknowledgement
from assistant.recall.benchmark import RecallSettings, benchmark_runtime, mentions, plan

MODEL_WAYS = {  # (reply prefix, worked turns before the statement)
    "model": ("", []),
    "model_after_got_it": ("Got it. ", []),
    "model_after_a_worked_turn": (
        "Got it. ",
        [("My cat is called Tom.", "Got it. Your cat is called Tom.")],
    ),
}
REPLY_TOKENS = 40
QUOTED = 4


def model_reply(engine, statement: str, prefix: str, worked: list[tuple[str, str]]) -> str:
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    for said, reply in worked:
        messages += [{"role": "user", "content": said}, {"role": "assistant", "content": reply}]
    messages.append({"role": "user", "content": statement})
    tokens = engine.tokenize(engine.render(messages) + prefix)
    written, _ = engine.complete(tokens, REPLY_TOKENS, temperature=0.0, seed=0)
    return (prefix + engine.detokenize(written)).split("\n\n")[0].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--facts", type=int, default=20)
    args = parser.parse_args()
    days = [plan(RecallSettings(seed=s, facts_per_night=args.facts))[0] for s in args.seeds]
    told = []  # (statement, its value, the day's other values)
    for day in days:
        said = [text for turns in day.conversations for text in turns]
        values = [fact.value for fact in day.facts]
        for fact in day.facts:
            others = [v for v in values if v != fact.value]
            told.append((next(t for t in said if fact.value in t), fact.value, others))
    with benchmark_runtime(starter_gguf(), "starter") as runtime:
        engine = runtime.load_engine()
        ways = {
            name: lambda s, p=p, w=w: model_reply(engine, s, p, w)
            for name, (p, w) in MODEL_WAYS.items()
        }
        ways["said_back"] = acknowledgement
        results = {}
        for name, reply_to in ways.items():
            started, right, missed = time.perf_counter(), 0, []
            for statement, value, others in told:
                reply = reply_to(statement)
                ok = mentions(reply, value) and not any(mentions(reply, o) for o in others)
                right += ok
                if not ok and len(missed) < QUOTED:
                    missed.append([statement, reply])
            results[name] = {
                "names_the_value": round(right / len(told), 4),
                "seconds": round(time.perf_counter() - started, 2),
                "missed": missed,
            }
        engine.close()
    print(
        json.dumps({"benchmark": "acknowledge", "statements": len(told), "ways": results}, indent=1)
    )


if __name__ == "__main__":
    main()
