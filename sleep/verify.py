"""Verification before commit (DESIGN.md §7 step 6): does the student now know, closed-book,
what the teacher answered with the notes in context, without having forgotten older nights
or drifted on unrelated prompts?"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"\w+", text)


def answers_agree(answer: str, expected: str) -> bool:
    """Same words in the same order: case and punctuation aside, a different value disagrees."""
    return _words(answer) == _words(expected)


def agreement(answers: Sequence[str], expected: Sequence[str]) -> float | None:
    """Share of answers agreeing with the expected ones (None when there is nothing to check)."""
    if not expected:
        return None
    return sum(map(answers_agree, answers, expected)) / len(expected)


@dataclass(frozen=True)
class Thresholds:
    min_recall: float
    min_retention: float
    max_anchor_divergence: float


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str


def judge(
    recall: float | None,
    retention: float | None,
    anchor_divergence: float,
    thresholds: Thresholds,
) -> Verdict:
    """Every check must hold; the first that does not is the reason the logs are kept."""
    if recall is None:
        return Verdict(False, "no held-out question had an answer to check (nothing verifiable).")
    if recall < thresholds.min_recall:
        return Verdict(
            False,
            f"closed-book recall {recall:.0%} is below the required {thresholds.min_recall:.0%}.",
        )
    if retention is not None and retention < thresholds.min_retention:
        return Verdict(
            False,
            f"older memories recalled {retention:.0%}, below the required"
            f" {thresholds.min_retention:.0%}.",
        )
    if anchor_divergence > thresholds.max_anchor_divergence:
        return Verdict(
            False,
            f"unrelated answers moved too much (divergence {anchor_divergence:.3f} >"
            f" {thresholds.max_anchor_divergence}).",
        )
    return Verdict(True, "")
