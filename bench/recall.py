"""Recall benchmark: does the assistant remember what it was told, once the logs are gone?

    python bench/recall.py [--seed 0] [--nights 1] [--facts-per-night 20]
                           [--updates-per-night 2] [--model NAME|FILE.gguf|HF_DIR]

The same as `assistant bench recall`; the benchmark itself lives in
``assistant/recall/benchmark.py`` so the installed command can run it. It prints JSON:
per night and overall, recall with the facts in context (the upper bound),
closed book before and after the night's consolidation, retention of earlier
nights, updated facts, abstention on facts never told, and drift (perplexity
ratio on a held-out slice of the corpus, in all and by kind of assistant turn),
with timings and token counts.
"""

from __future__ import annotations

import sys

from assistant.cli import cli

if __name__ == "__main__":
    cli(["bench", "recall", *sys.argv[1:]], prog_name="bench/recall.py")
