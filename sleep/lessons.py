"""N3 lessons and the training loop: what the student learns from, batch by batch.

Teacher = the model before tonight *with the note in context*; student = the
same model plus the new expert *without it*. A lesson is the student's prompt,
an answer, and the teacher's top-k next-token distribution at every answer
token. Four pools feed each batch:

- facts: the teacher's answers to the probes;
- samples: the student's own answers (on-policy), drawn afresh during training
  and scored by the teacher, so the student learns from its own mistakes;
- negatives: questions about things never told, with "you haven't told me"
  as a hard target, so no learned value leaks into them;
- anchors: general prompts and earlier nights' probes, with the model before
  tonight (no notes) as the target, so nothing else moves.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from assistant.backends.protocol import Backend, Continuation, Lesson, TopK, common_prefix
from assistant.sleep.recipe import Recipe


@dataclass(frozen=True)
class Example:
    """One question as both models see it (token ids; plaintext never leaves RAM)."""

    teacher_prompt: list[int]
    student_prompt: list[int]
    answer: list[int]  # the reply, with the end-of-turn token when it ended by itself


def lessons_for(backend: Backend, examples: Sequence[Example], top_k: int) -> list[Lesson]:
    """The teacher's top-k on each example's answer, given its teacher prompt; the shared
    start of the prompts (the system turn, the note) is computed once."""
    if not examples:
        return []
    prompts = [e.teacher_prompt for e in examples]
    prefix = common_prefix(prompts)
    continuations = [
        Continuation(p[len(prefix) :], e.answer) for p, e in zip(prompts, examples, strict=True)
    ]
    targets = backend.teacher_topk(prefix, continuations, top_k)
    return [Lesson(e.student_prompt, e.answer, t) for e, t in zip(examples, targets, strict=True)]


def ending_here(lesson: Lesson, end_token: int) -> Lesson:
    """The lesson with its last target made a hard end of turn (when its answer ends with
    one): the teacher's reply was cut at its first paragraph, and the student learns to stop
    there rather than to go on listing whatever else it knows."""
    if not lesson.answer or lesson.answer[-1] != end_token:
        return lesson
    token_ids = lesson.targets.token_ids.copy()
    logprobs = lesson.targets.logprobs.copy()
    token_ids[-1] = 0
    token_ids[-1, 0] = end_token
    logprobs[-1] = -1e4
    logprobs[-1, 0] = 0.0
    return Lesson(lesson.prompt, lesson.answer, TopK(token_ids, logprobs))


def hard_lesson(prompt: Sequence[int], answer: Sequence[int], top_k: int) -> Lesson:
    """A lesson whose target is exactly ``answer``: all the probability on each answer token
    (the KL to it is then the cross-entropy)."""
    token_ids = np.zeros((len(answer), top_k), np.int64)
    token_ids[:, 0] = answer
    logprobs = np.full((len(answer), top_k), -1e4, np.float32)
    logprobs[:, 0] = 0.0
    return Lesson(list(prompt), list(answer), TopK(token_ids, logprobs))


@dataclass
class Pools:
    facts: list[Lesson]
    samples: list[Lesson]
    negatives: list[Lesson]
    anchors: list[Lesson]


def batch_at(step: int, pools: Pools, recipe: Recipe) -> list[Lesson]:
    """Step ``step``'s batch: facts in shuffled passes, then a few of each other pool. A
    function of its arguments alone, so a resumed night trains on exactly the batches the
    uninterrupted one would have."""
    facts, per_batch, seed = len(pools.facts), recipe.facts_per_batch, recipe.seed
    picked = []
    for position in range(step * per_batch, (step + 1) * per_batch):
        epoch, offset = divmod(position, facts)
        picked.append(pools.facts[_pass_order(seed, epoch, facts)[offset]])
    rng = random.Random(f"{seed}/extras/{step}")
    for pool, count in (
        (pools.samples, recipe.samples_per_batch),
        (pools.negatives, recipe.negatives_per_batch),
        (pools.anchors, recipe.anchors_per_batch),
    ):
        picked += rng.sample(pool, min(count, len(pool)))
    return picked


@functools.lru_cache(maxsize=4)
def _pass_order(seed: int, epoch: int, lessons: int) -> tuple[int, ...]:
    return tuple(random.Random(f"{seed}/pass/{epoch}").sample(range(lessons), lessons))


def train(
    backend: Backend,
    pools: Pools,
    recipe: Recipe,
    deadline: float,
    *,
    start_step: int = 0,
    on_step: Callable[[int, float, int], None] = lambda *_: None,
    evaluate: Callable[[int], bool] = lambda _: False,
) -> tuple[int, float | None]:
    """Train from ``start_step`` until ``evaluate(steps done)``, called every
    ``evaluate_every`` steps, says the expert has learned, or ``max_steps``, or the
    ``deadline`` (monotonic seconds). The learning rate decays linearly to zero over
    ``max_steps``. ``on_step(steps done, loss, batch tokens)`` follows each step and may
    raise to stop. Returns (steps done, the last loss)."""
    loss = None
    step = start_step
    if not pools.facts:
        return step, loss
    while step < recipe.max_steps and time.monotonic() < deadline:
        batch = batch_at(step, pools, recipe)
        rate = recipe.learning_rate * (1 - step / recipe.max_steps)
        loss = backend.train_step(batch, rate)
        step += 1
        on_step(step, loss, sum(len(lesson.prompt) + len(lesson.answer) for lesson in batch))
        if step % recipe.evaluate_every == 0 and evaluate(step):
            break
    return step, loss
