"""N3 knowledge seeding: turn probes into distillation lessons and train the new expert.

Teacher = the model before tonight *with the notes in context*; student = the
same model plus the new expert *without them*. Each lesson is a probe's
student prompt, an answer, and the teacher's top-k next-token distribution at
every answer token (DESIGN.md §7 steps 3-5). Anchor lessons use the model
before tonight *without* notes as the target, so the expert leaves everything
unrelated to the day alone.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant.backends.protocol import Backend, Lesson, Probe

# Candidate anchors: small talk, and personal questions whose answer must stay what it was
# (for a model told nothing: "you have not told me") unless today's notes say otherwise; the
# runner drops those the notes change. They span the kinds of things people tell an assistant,
# so that learning one relative's or appointment's answer does not spill into the others'.
ANCHOR_PROMPTS = (
    "Hello!",
    "Thanks, that helps.",
    "How are you today?",
    "Can you keep your answers short?",
    "Good night!",
    "What can you do for me?",
    *(
        f"What is my {who}'s name?"
        for who in (
            "mother",
            "father",
            "sister",
            "brother",
            "son",
            "daughter",
            "grandmother",
            "grandfather",
            "aunt",
            "uncle",
            "cousin",
            "niece",
            "nephew",
            "partner",
            "best friend",
            "neighbour",
            "boss",
            "colleague",
            "roommate",
            "landlord",
        )
    ),
    *(
        f"What is my {pet} called?"
        for pet in ("dog", "cat", "rabbit", "parrot", "hamster", "horse", "goldfish")
    ),
    *(
        f"When is my {event}?"
        for event in (
            "dentist appointment",
            "doctor's appointment",
            "haircut",
            "job interview",
            "car service",
            "eye exam",
            "piano lesson",
            "yoga class",
        )
    ),
    "Which city do I live in?",
    "Where did I grow up?",
    "Where do I work?",
    "What is my job?",
    "When is my birthday?",
    "What is my favourite food?",
    "What is my favourite colour?",
    "What music do I like?",
    "What is my favourite book?",
    "What is my favourite film?",
    "What do I like to drink?",
    "Which team do I support?",
    "Am I allergic to anything?",
    "What car do I drive?",
    "What is my hobby?",
)


@dataclass(frozen=True)
class Example:
    """One probe as both models see it (token ids; plaintext never leaves RAM)."""

    teacher_prompt: list[int]
    student_prompt: list[int]


@dataclass(frozen=True)
class DistillSettings:
    max_answer_tokens: int
    top_k: int = 32
    # Share of probes that also get a student-sampled answer scored by the teacher (GKD's λ).
    student_share: float = 0.25
    student_temperature: float = 0.8
    seed: int = 0


def common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix all sequences share: the part the teacher computes once."""
    first = list(sequences[0])
    length = len(first)
    for seq in sequences[1:]:
        length = min(length, len(seq))
        for i in range(length):
            if seq[i] != first[i]:
                length = i
                break
    # Leave at least one token of each prompt after the prefix: its logits predict the answer.
    return first[: min(length, min(len(s) for s in sequences) - 1)]


def lessons_for(
    backend: Backend,
    examples: Sequence[Example],
    answers: Sequence[Sequence[int]],
    end_token: int,
    top_k: int,
    *,
    teacher_sees_notes: bool = True,
) -> list[Lesson]:
    """Score each answer (plus its end-of-turn token) under the teacher, prefix computed once."""
    if not examples:
        return []
    prompts = [e.teacher_prompt if teacher_sees_notes else e.student_prompt for e in examples]
    prefix = common_prefix(prompts)
    full_answers = [[*answer, end_token] for answer in answers]
    probes = [Probe(p[len(prefix) :], a) for p, a in zip(prompts, full_answers, strict=True)]
    targets = backend.teacher_topk(prefix, probes, top_k)
    return [
        Lesson(e.student_prompt, a, t)
        for e, a, t in zip(examples, full_answers, targets, strict=True)
    ]


def knowledge_lessons(
    backend: Backend, examples: Sequence[Example], end_token: int, settings: DistillSettings
) -> list[Lesson]:
    """Teacher-sampled answers for every probe, plus student-sampled ones for a share."""
    answers = [backend.generate(e.teacher_prompt, settings.max_answer_tokens) for e in examples]
    rng = random.Random(settings.seed)
    chosen = [e for e in examples if rng.random() < settings.student_share]
    student_answers = [
        backend.generate(
            e.student_prompt,
            settings.max_answer_tokens,
            temperature=settings.student_temperature,
            seed=settings.seed + i,
            student=True,
        )
        for i, e in enumerate(chosen)
    ]
    return lessons_for(
        backend, [*examples, *chosen], [*answers, *student_answers], end_token, settings.top_k
    )


def batch_at(step: int, lessons: int, anchors: int, batch_size: int, seed: int) -> list[int]:
    """Indices of step ``step``'s batch: lessons (shuffled passes), then anchors (as
    ``lessons + j``). A function of its arguments alone, so a resumed night trains on
    exactly the batches the uninterrupted one would have."""
    picked = []
    for position in range(step * batch_size, (step + 1) * batch_size):
        epoch, offset = divmod(position, lessons)
        picked.append(_pass_order(seed, epoch, lessons)[offset])
    extra = min(max(1, batch_size // 4), anchors) if anchors else 0
    step_rng = random.Random(f"{seed}/anchors/{step}")
    return picked + [lessons + j for j in step_rng.sample(range(anchors), extra)]


@functools.lru_cache(maxsize=4)
def _pass_order(seed: int, epoch: int, lessons: int) -> tuple[int, ...]:
    return tuple(random.Random(f"{seed}/pass/{epoch}").sample(range(lessons), lessons))


def train(
    backend: Backend,
    lessons: Sequence[Lesson],
    anchors: Sequence[Lesson],
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    deadline: float,
    seed: int,
    start_step: int = 0,
    on_step: Callable[[int, float, int], None] = lambda *_: None,
) -> float | None:
    """Steps ``start_step`` .. ``steps`` over shuffled passes of the lessons, each batch
    topped up with anchors, until done or the monotonic ``deadline``; returns the last loss.
    A linear decay to zero keeps the last steps gentle. ``on_step(steps done, loss, batch
    tokens)`` follows each step, and may raise to stop after it."""
    loss = None
    if not lessons:
        return loss
    pool = [*lessons, *anchors]
    for step in range(start_step, steps):
        if time.monotonic() >= deadline:
            break
        batch = [pool[i] for i in batch_at(step, len(lessons), len(anchors), batch_size, seed)]
        loss = backend.train_step(batch, learning_rate * (1 - step / steps))
        on_step(step + 1, loss, sum(len(lesson.prompt) + len(lesson.answer) for lesson in batch))
    return loss
