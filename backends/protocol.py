"""The interface the sleep runner trains through, the same for torch and MLX, and the
batch layout both backends' loss runs on (``pack``).

Only token ids, numpy arrays and adapters held in memory cross it, so the runner never imports
a training framework. The "teacher" is the model before tonight's sleep (base
plus the experts already learned); the "student" is the teacher plus the one
new expert being trained. Only the new expert ever changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from assistant.experts.peft import PeftAdapter

# Every linear layer of a Llama/Qwen2 block: facts live in the MLP as much as in attention.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LearnedExpert:
    """An expert from an earlier night, applied frozen at its scale."""

    adapter: PeftAdapter
    scale: float = 1.0


@dataclass(frozen=True)
class NewExpert:
    """The shape of tonight's expert. It starts as a no-op (LoRA B is zero)."""

    rank: int = 16
    alpha: float = 32.0
    target_modules: tuple[str, ...] = ALL_LINEAR
    seed: int = 0


@dataclass(frozen=True)
class Continuation:
    """A continuation scored after a shared prefix: a prompt tail, then the answer."""

    prompt: Sequence[int]
    answer: Sequence[int]


@dataclass(frozen=True)
class TopK:
    """The teacher's next-token distribution at each answer position, cut to its k best tokens.

    ``token_ids`` and ``logprobs`` are (len(answer), k); the log-probabilities
    are under the full vocabulary, so their exponentials sum to at most one.
    """

    token_ids: np.ndarray
    logprobs: np.ndarray


@dataclass(frozen=True)
class Lesson:
    """One distillation example: the student's prompt (no memories), the answer, the targets."""

    prompt: Sequence[int]
    answer: Sequence[int]
    targets: TopK


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


class Backend(Protocol):
    name: str
    device: str

    def teacher_topk(
        self, prefix: Sequence[int], continuations: Sequence[Continuation], k: int
    ) -> list[TopK]:
        """The teacher's top-k targets on each continuation's answer, the prefix computed once."""
        ...

    def train_step(self, lessons: Sequence[Lesson], learning_rate: float) -> float:
        """One optimizer step of the new expert; returns the mean per-token KL to the teacher."""
        ...

    def divergence(self, lessons: Sequence[Lesson]) -> float:
        """The same mean per-token KL as ``train_step``, without changing anything."""
        ...

    def last_logits(self, tokens: Sequence[int], *, student: bool = True) -> np.ndarray:
        """Next-token logits after ``tokens`` (float32, full vocabulary)."""
        ...

    def training_state(self) -> bytes:
        """The new expert's weights and optimizer state, for a checkpoint."""
        ...

    def restore_training_state(self, state: bytes) -> None:
        """Continue from ``training_state``'s bytes as if training had never stopped."""
        ...

    def export_expert(self) -> PeftAdapter:
        """The new expert as a PEFT adapter (the interchange format), in memory."""
        ...


@dataclass(frozen=True)
class PackedBatch:
    """A batch of lessons laid out for one forward pass: the prefix they share (run once),
    then each lesson's rest (prompt tail and answer) right-padded to one width, and where
    the answer tokens are predicted, with the teacher's targets for them in that order."""

    prefix: list[int]
    ids: np.ndarray  # (lessons, width) token ids after the prefix, zeros as padding
    lengths: list[int]  # each row's real tokens after the prefix
    rows: list[int]  # the row and position of each answer token's prediction...
    positions: list[int]  # ...position i predicts token i + 1
    token_ids: np.ndarray  # (answer tokens, k) the teacher's top-k token ids
    teacher_logprobs: np.ndarray  # (answer tokens, k) and their log-probabilities

    @property
    def padded(self) -> bool:
        return min(self.lengths) < self.ids.shape[1]


def pack(lessons: Sequence[Lesson]) -> PackedBatch:
    """The lessons as one batch; both backends' loss runs on this layout."""
    prefix = common_prefix([lesson.prompt for lesson in lessons])
    rests = [[*lesson.prompt[len(prefix) :], *lesson.answer] for lesson in lessons]
    ids = np.zeros((len(lessons), max(map(len, rests))), np.int64)
    rows: list[int] = []
    positions: list[int] = []
    for row, (lesson, rest) in enumerate(zip(lessons, rests, strict=True)):
        ids[row, : len(rest)] = rest
        start = len(lesson.prompt) - len(prefix) - 1
        rows += [row] * len(lesson.answer)
        positions += range(start, start + len(lesson.answer))
    return PackedBatch(
        prefix,
        ids,
        [len(rest) for rest in rests],
        rows,
        positions,
        np.concatenate([lesson.targets.token_ids for lesson in lessons]),
        np.concatenate([lesson.targets.logprobs for lesson in lessons]),
    )
