"""Picks which of today's notes go into the prompt for a message.

Notes are the user's statements, as sleep's triage takes them. A message and a
note are compared by the word stems they are about (Snowball's English stemmer:
"lives" finds "live"), with a few everyday words that ask about one thing folded
into one term ("employs" and "company" both ask for the employer; "married" for
a partner). Words that say nothing about *what* is asked are left out: function
words, and the words any question about oneself uses ("know", "remind",
"time"). Naming words ("name", "called") never make a note match, but between
notes that match equally they favour the one that names something.

A note is picked only when it holds ``MIN_COVERAGE`` of what the message asks
about, each term weighted by its rarity among the notes (BM25's idf); otherwise
a shared word would put an unrelated note in front of a question the model
answers well alone ("What is frozen water called?" is not about "My
brother-in-law is called Torvald."). Chosen by measurement: `python
bench/retrieval.py`. The few picked come in the order said; ties go to the newer
note, so a correction wins over what it corrects. Everything here runs on
plaintext held only in RAM.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import cache

_WORD = re.compile(r"[a-z0-9]+")


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that carry no meaning of their own (sleep's probes leave them out too); the first
# line is what contractions leave behind ("what's", "I'm", "don't", "I'll", "you're").
STOP_WORDS = _word_set("""
    s m t d ll re ve
    a an and are as at be but by do does for from has have i in is it its me my of on or so
    that the to was what when where which who why will with you your
""")
# Words a question about oneself uses whatever it asks about (compared as stems).
_NOT_ABOUT_ANYTHING = _word_set("""
    been can could did had how shall should this were whom whose would mine own
    know remind idea happen tell again please remember told said say something might want
    let just time date day am our any much most
""")
_NAMING = _word_set("name named names call called")
# Everyday words that ask about one thing, each group folded into its first word.
_SAME_THING = (
    "job occupation profession career",
    "employer employ company work",
    "partner married spouse husband wife",
    "live home city town address",
    "birthday born",
    "car drive vehicle",
    "favourite like love enjoy prefer",
    "hobby pastime",
    "food dish meal",
    "film movie",
    "mother mum mom",
    "father dad",
    "allergy allergic",
)
NAMING = "<naming>"  # the term every naming word counts as
MIN_COVERAGE = 0.4  # share of a message's terms (by rarity) a note must hold to be picked


def terms(text: str) -> list[str]:
    """The stems a text is about, everyday synonyms folded together; naming words as
    ``NAMING``."""
    words = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]
    folded = _folded()
    return [folded.get(s, s) for s in _stemmer().stemWords(words) if folded.get(s, s)]


@cache
def _folded() -> dict[str, str]:
    """Stem -> the term it counts as ("" for none)."""
    stem = _stemmer().stemWord
    folded = {stem(w): stem(group.split()[0]) for group in _SAME_THING for w in group.split()}
    folded |= {stem(w): NAMING for w in _NAMING}
    return folded | {stem(w): "" for w in _NOT_ABOUT_ANYTHING}


@cache
def _stemmer():
    import snowballstemmer

    return snowballstemmer.stemmer("english")


class MemoryIndex:
    """The notes (the user's statements), in the order said, and the terms of each."""

    def __init__(self, notes: Sequence[str] = ()) -> None:
        self.notes: list[str] = []
        self._terms: list[set[str]] = []
        for note in notes:
            self.add(note)

    def add(self, note: str) -> None:
        self.notes.append(note)
        self._terms.append(set(terms(note)))

    def __len__(self) -> int:
        return len(self.notes)

    def select(self, query: str, k: int) -> list[str]:
        """The ``k`` notes holding most of what ``query`` asks about, each at least
        ``MIN_COVERAGE`` of it (none when none does), in the order said."""
        asked = set(terms(query))
        naming = NAMING in asked
        asked.discard(NAMING)
        if not self.notes or not asked:
            return []
        n = len(self.notes)
        weight = {
            term: math.log(1 + (n - df + 0.5) / (df + 0.5))
            for term in asked
            for df in [sum(term in held for held in self._terms)]
        }
        total = sum(weight.values())
        ranked = sorted(
            (
                sum(weight[t] for t in asked & held) / total,
                naming and NAMING in held,
                i,  # the newer of two equal matches first
            )
            for i, held in enumerate(self._terms)
        )[::-1]
        chosen = [i for coverage, _, i in ranked[:k] if coverage >= MIN_COVERAGE]
        return [self.notes[i] for i in sorted(chosen)]
