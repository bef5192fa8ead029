"""Verification before commit (DESIGN.md §7 step 6), judged by the facts the answers carry.

With tonight's candidate expert and no notes, the assistant must name the value
of each held-out probe (the value the teacher named with the note in context),
must not name any of today's values when asked about something never told,
must still name the values of earlier nights' probes, and must not have moved
on the anchors. Wording is free: "Ramona" and "Your sister is Ramona." agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    passed_probes: list[Probe]  # the held-out probes answered right: the expert's kept set


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


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
) -> Checks:
    hits = recalled(answer, held_out)
    return Checks(
        recall=share(hits),
        leak=share(leaked(answer, negatives, values)),
        retention=share(recalled(answer, earlier)),
        anchor_divergence=anchor_divergence,
        passed_probes=[p for p, hit in zip(held_out, hits, strict=True) if hit],
    )


def judge(checks: Checks, thresholds: Thresholds) -> Verdict:
    """Every check must hold; the first that does not is the reason the logs are kept."""
    if checks.recall is None:
        return Verdict(False, "no held-out question had an answer to check (nothing verifiable).")
    if checks.recall < thresholds.min_recall:
        return Verdict(
            False,
            f"closed-book recall {checks.recall:.0%} is below the required"
            f" {thresholds.min_recall:.0%}.",
        )
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
    return Verdict(True, "")
