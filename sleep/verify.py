"""Verification before commit, judged by the facts the answers carry.

With tonight's candidate expert and no notes, the assistant must not name any
of today's values when asked about something never told, must still name the
values of earlier nights' probes, and must not have moved on the anchors: these
judge the expert as a whole. Each note is judged by its own held-out probes (it
is learned when at least ``min_recall`` of them name their value, the value the
teacher named with the note in context); the expert is kept when at least one
note is learned, and the notes not learned wait for the next night. Wording is
free: "Ramona" and "Your sister is Ramona." agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistant import faults
from assistant.sleep.probes import Probe, mentions_any, names

if TYPE_CHECKING:
    from assistant.config import Config

Answer = Callable[[str], str]  # closed-book answer of the candidate to a question


@dataclass(frozen=True)
class Thresholds:
    min_recall: float
    min_retention: float
    max_leak: float
    max_anchor_divergence: float

    @classmethod
    def of(cls, config: Config) -> Thresholds:
        """The gates a config sets."""
        return cls(
            config.sleep_min_recall,
            config.sleep_min_retention,
            config.sleep_max_leak,
            config.sleep_max_anchor_divergence,
        )


@dataclass(frozen=True)
class Checks:
    recall: float | None  # held-out probes answered with their value
    leak: float | None  # held-out negatives answered with one of today's values
    retention: float | None  # earlier nights' probes still answered with their value
    anchor_divergence: float  # KL on the anchors, above its value before training
    passed_probes: list[Probe]  # the held-out probes answered right
    # Each note the night trained on and its held-out probes' hits (none: it had no
    # held-out probe, so it cannot be shown learned).
    by_note: dict[str, list[bool]] = field(default_factory=dict)

    def learned_notes(self, min_recall: float) -> list[str]:
        """The notes at least ``min_recall`` of whose held-out probes were answered right (a
        note without one only when no recall is required)."""
        return [
            note
            for note, hits in self.by_note.items()
            if sum(hits) >= min_recall * max(len(hits), 1) and not faults.unlearnable(note)
        ]


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    learned: tuple[str, ...] = ()  # the notes the committed expert holds


def share(hits: Sequence[bool]) -> float | None:
    return sum(hits) / len(hits) if hits else None


def recalled(answer: Answer, probes: Sequence[Probe]) -> list[bool]:
    return [names(answer(p.question), p.values) for p in probes]


def leaked(answer: Answer, negatives: Sequence[str], values: set[str]) -> list[bool]:
    return [mentions_any(answer(question), values) for question in negatives]


def check(
    answer: Answer,
    held_out: Sequence[Probe],
    negatives: Sequence[str],
    earlier: Sequence[Probe],
    values: set[str],
    anchor_divergence: float,
    notes: Sequence[str] = (),
) -> Checks:
    """The checks of a candidate on tonight's ``held_out`` probes (of ``notes``, the notes
    trained on), never-told ``negatives`` and ``earlier`` nights' probes."""
    hits = recalled(answer, held_out)
    by_note: dict[str, list[bool]] = {note: [] for note in notes}
    for probe, hit in zip(held_out, hits, strict=True):
        by_note.setdefault(probe.note, []).append(hit)
    return Checks(
        recall=share(hits),
        leak=share(leaked(answer, negatives, values)),
        retention=share(recalled(answer, earlier)),
        anchor_divergence=anchor_divergence,
        passed_probes=[p for p, hit in zip(held_out, hits, strict=True) if hit],
        by_note=by_note,
    )


def judge(checks: Checks, thresholds: Thresholds) -> Verdict:
    """The expert's checks must all hold and at least one note must be learned; the first
    that does not is the reason the logs are kept."""
    if checks.recall is None:
        return Verdict(False, "no held-out question had an answer to check (nothing verifiable).")
    if checks.leak is not None and checks.leak > thresholds.max_leak:
        return Verdict(
            False,
            f"{checks.leak:.0%} of questions about things never told were answered with"
            f" something learned tonight (at most {thresholds.max_leak:.0%} allowed).",
        )
    if checks.retention is not None and checks.retention < thresholds.min_retention:
        return Verdict(
            False,
            f"older memories recalled {checks.retention:.0%}, below the required"
            f" {thresholds.min_retention:.0%}.",
        )
    if checks.anchor_divergence > thresholds.max_anchor_divergence:
        return Verdict(
            False,
            f"unrelated answers moved too much (divergence {checks.anchor_divergence:.3f} >"
            f" {thresholds.max_anchor_divergence}).",
        )
    learned = checks.learned_notes(thresholds.min_recall)
    if not learned:
        return Verdict(
            False,
            f"no note was learned: closed-book recall {checks.recall:.0%}, and a note needs"
            f" {thresholds.min_recall:.0%} of its held-out questions right.",
        )
    return Verdict(True, "", tuple(learned))
