"""Picks which of today's unconsolidated memories go into the prompt.

The best BM25 matches for the message (a few: a small model reads one note
well and several badly), in the order they were said, so a later statement
follows an earlier one it corrects; ties go to the newer note. A note sharing
no word with the message is never picked. Everything here runs on plaintext
held only in RAM.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9]+")
STOP_WORDS = frozenset(
    [
        # what contractions leave behind ("what's", "I'm", "don't", "I'll", "you're", "I've")
        "s",
        "m",
        "t",
        "d",
        "ll",
        "re",
        "ve",
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


class MemoryIndex:
    """A BM25 index over memory notes (text of earlier user turns), kept in insertion order."""

    def __init__(self, notes: Sequence[str] = ()) -> None:
        self.notes: list[str] = []
        self._terms: list[Counter[str]] = []
        for note in notes:
            self.add(note)

    def add(self, note: str) -> None:
        self.notes.append(note)
        self._terms.append(Counter(_terms(note)))

    def __len__(self) -> int:
        return len(self.notes)

    def select(self, query: str, k: int, k1: float = 1.2, b: float = 0.75) -> list[str]:
        """The ``k`` notes that best match ``query`` (none that share no word), chronological."""
        if not self.notes:
            return []
        n_docs = len(self.notes)
        avg_len = sum(sum(t.values()) for t in self._terms) / n_docs or 1.0
        doc_freq = Counter(term for terms in self._terms for term in terms)
        query_terms = set(_terms(query))

        def score(i: int) -> float:
            terms, length = self._terms[i], sum(self._terms[i].values())
            total = 0.0
            for term in query_terms & terms.keys():
                idf = math.log(1 + (n_docs - doc_freq[term] + 0.5) / (doc_freq[term] + 0.5))
                tf = terms[term]
                total += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_len))
            return total

        scores = [score(i) for i in range(n_docs)]
        # Best matches first, ties broken by recency; then restore chronological order.
        ranked = sorted(range(n_docs), key=lambda i: (scores[i], i), reverse=True)
        chosen = [i for i in ranked[:k] if scores[i] > 0]
        return [self.notes[i] for i in sorted(chosen)]
