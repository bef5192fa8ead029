"""N2 and the first half of N3: the day's notes, their chunks, and the probes asked about them.

A *note* is one thing the user said (the awake assistant retrieves the same
notes into its prompt). A *probe* is a question the model should be able to
answer after sleep without the notes: questions the model itself writes about
each note, the user's own turns, and a few generic ones (DESIGN.md §7 step 2).
Everything here is plaintext and lives only in RAM.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant.prompting import QUESTIONS_PROMPT, chat_prompt, note_task
from assistant.store.memory import Turn

# The last one is held out for verification when the model writes too few questions.
GENERIC_PROBES = ("What do you know about me?", "What have I told you about myself?")
# One in HOLD_OUT_EVERY model-written questions is kept out of training to verify with.
HOLD_OUT_EVERY = 4
MAX_QUESTIONS_PER_NOTE = 8
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")


def day_notes(turns: Sequence[Turn]) -> list[str]:
    """The user's turns in the order said, exact repeats collapsed onto their latest position.

    Keeping the latest position matters: when a fact changes, the newest
    statement must come last so the teacher (trained that later wins) answers with it.
    """
    texts = [t.text.strip() for t in turns if t.role == "user"]
    last = {text: i for i, text in enumerate(texts)}
    return [text for i, text in enumerate(texts) if last[text] == i]


def chunk_notes(notes: Sequence[str], fits: Callable[[list[str]], bool]) -> list[list[str]]:
    """Consecutive notes grouped so each group, as the teacher's context, ``fits``.

    A day usually fits in one chunk; when it does not, a later chunk cannot
    overrule an earlier one, which is why chunks stay in the order said.
    """
    chunks: list[list[str]] = []
    for note in notes:
        if chunks and fits([*chunks[-1], note]):
            chunks[-1].append(note)
        elif fits([note]):
            chunks.append([note])
        # A single note too long for any context cannot be a teacher's context; it stays
        # in the store (nothing is deleted unless verified) and the report counts it.
    return chunks


def parse_questions(text: str) -> list[str]:
    """The questions in a model-written list, one per line, bullets and numbers removed."""
    questions = []
    for line in text.splitlines():
        line = _LIST_MARK.sub("", line).strip()
        if line.endswith("?") and len(line) > 3 and line not in questions:
            questions.append(line)
    return questions[:MAX_QUESTIONS_PER_NOTE]


@dataclass(frozen=True)
class ChunkProbes:
    notes: list[str]
    train: list[str]
    held_out: list[str]


def split_probes(
    notes: Sequence[str], questions_per_note: Sequence[Sequence[str]], seed: int
) -> ChunkProbes:
    """Train on the user's turns, generic probes and most model-written questions;
    hold out one in HOLD_OUT_EVERY of the chunk's questions (at least one) to verify with."""
    rng = random.Random(seed)
    train: list[str] = [*notes, *GENERIC_PROBES]
    pool = [q for q in dict.fromkeys(q for qs in questions_per_note for q in qs) if q not in train]
    rng.shuffle(pool)
    cut = -(-len(pool) // HOLD_OUT_EVERY)  # rounded up: one question already gives one to check
    held_out, train = pool[:cut], train + pool[cut:]
    if not held_out:
        # The model wrote no question to spare: verify on a generic probe instead.
        held_out.append(train.pop())
    return ChunkProbes(list(notes), train, held_out)


def questions_request(note: str) -> list[dict[str, str]]:
    """Messages asking the model for questions about one note (with no other context)."""
    return chat_prompt([], [], note_task(QUESTIONS_PROMPT, note)).messages
