"""N2, light sleep: the day's turns become the notes the night learns from.

The user's statements about themselves (small talk, thanks, questions and
requests to the assistant hold nothing to remember), in the order said, repeats
collapsed,
and any note too long for the teacher's context split at sentence (or word)
boundaries into pieces that fit, so nothing said is dropped before its epoch
is shredded. Each note keeps the ids of the turns it came from: a note the
night did not learn keeps its turns (``wake`` carries them to the next night).
Chat reads the same notes (``assistant.chat``): what it retrieves before a night
is what the night learns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from assistant.store.memory import Turn

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_FIRST_PERSON = re.compile(r"\b(i|i'm|i've|i'd|i'll|me|my|mine|we|we're|our|ours|us)\b", re.I)
# How a request to the assistant begins ("Remind me of what I said today."); a question
# ends with "?" (one begun "When" or "What" may be a statement: "What I love is jazz.").
_ASKS = re.compile(
    r"\W*((can|could|would|will) you|tell|remind|list|show|give|explain|describe"
    r"|write|summari[sz]e|repeat|recite)\b",
    re.I,
)


def about_the_user(text: str) -> bool:
    """A statement in the first person: something the user tells about themselves, with no
    question or request in it."""
    text = text.strip()
    asks = text.endswith("?") or any(_ASKS.match(s) for s in _SENTENCE_END.split(text))
    return not asks and bool(_FIRST_PERSON.search(text))


Notes = dict[str, list[int]]  # each note, in order, and the ids of the turns it came from


def day_notes(turns: Sequence[Turn]) -> Notes:
    """The user's statements about themselves in the order said, exact repeats collapsed onto
    their latest position (with the ids of every turn that said them).

    The latest position matters: when a fact changes, the newest statement comes
    last, and the night lets the later of two notes about one thing win.
    """
    said = [(t.text.strip(), t.id) for t in turns if t.role == "user" and about_the_user(t.text)]
    sources: dict[str, list[int]] = {}
    for text, turn_id in said:
        sources.setdefault(text, []).append(turn_id)
    last = {text: i for i, (text, _) in enumerate(said)}
    return {text: sources[text] for i, (text, _) in enumerate(said) if last[text] == i}


def fitting_pieces(note: str, fits: Callable[[str], bool]) -> list[str]:
    """The note itself if it ``fits``; else consecutive sentences packed into pieces that
    do, a sentence too long on its own split between words."""
    if fits(note):
        return [note]
    units = _SENTENCE_END.split(note)
    if len(units) == 1:
        units = note.split()
        if len(units) == 1:  # one unbroken run of characters: halve it
            half = len(note) // 2
            units = [note[:half], note[half:]]
    pieces: list[str] = []
    for unit in units:
        joined = f"{pieces[-1]} {unit}" if pieces else unit
        if pieces and fits(joined):
            pieces[-1] = joined
        else:
            pieces += fitting_pieces(unit, fits)
    return pieces


def notes_that_fit(notes: Notes, fits: Callable[[str], bool]) -> Notes:
    """The notes cut into pieces that fit, each piece with the turns of its note."""
    pieces: Notes = {}
    for note, turn_ids in notes.items():
        for piece in fitting_pieces(note, fits):
            pieces.setdefault(piece, [])
            pieces[piece] += [t for t in turn_ids if t not in pieces[piece]]
    return pieces
