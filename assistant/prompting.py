"""How chat replies are laid out: a statement is said back; a prompt is the system turn,
the history, and the message with its notes.

One layout for chat, the sleep teacher and the recall benchmark, chosen by
measurement on the starter model (SmolLM2-135M-Instruct; `assistant bench recall
--facts-per-night 20`, seeds 0-2, share of held-out questions answered from
context):

- notes in the system turn: 0.06 (a small model does not read its system turn);
- notes in the user turn before the question, best BM25 match only: 0.50, 0.39,
  0.56 (with the best 3: 0.28-0.39; the wrong notes distract it);
- the same, and the reply begun as "From your notes: ": 0.83, 0.78, 0.83.
  Begun that way, the model copies from the note instead of answering "I'm
  sorry, as an AI I cannot know that".

So the few notes retrieved for a message go in its user turn, and when there
are any the assistant's reply starts with ``NOTES_REPLY_PREFIX`` (shown and
stored as part of the reply: it also tells the user where the answer comes from).
A message that only tells something is not put to the model: see ``acknowledgement``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

SYSTEM_PROMPT = "You are a personal assistant running on the user's own computer. Answer briefly."
NOTES_HEADER = "My notes:"
NOTES_REPLY_PREFIX = "From your notes: "
NOTES_PER_MESSAGE = 1  # retrieved notes per message: more distract a small model


@dataclass(frozen=True)
class ChatPrompt:
    """Messages for the chat template, and the start of the reply written for the model."""

    messages: list[dict[str, str]]
    reply_prefix: str = ""


def with_notes(notes: Sequence[str], text: str) -> str:
    """A user turn carrying notes: the notes as a list, then the message."""
    if not notes:
        return text
    listed = "\n".join(f"- {note}" for note in notes)
    return f"{NOTES_HEADER}\n{listed}\n\n{text}"


def chat_prompt(
    notes: Sequence[str], history: Sequence[tuple[str, str]], user_text: str
) -> ChatPrompt:
    """The system turn, earlier (role, text) turns, then the new message with its notes."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    messages += [{"role": role, "content": text} for role, text in history]
    messages.append({"role": "user", "content": with_notes(notes, user_text)})
    return ChatPrompt(messages, NOTES_REPLY_PREFIX if notes else "")


ACKNOWLEDGE_PREFIX = "Got it: "
SAID_BACK_CHARACTERS = 240  # a longer statement is said back up to a sentence end before this
# The first person turned to the second, for repeating back what the user said.
_TO_SECOND_PERSON = {
    "i am": "you are",
    "i was": "you were",
    "i": "you",
    "i'm": "you're",
    "i've": "you've",
    "i'd": "you'd",
    "i'll": "you'll",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "we": "you",
    "we're": "you're",
    "our": "your",
    "ours": "yours",
    "us": "you",
}
_SAID_BY_THE_USER = re.compile(r"\b(i|i'm|i've|i'd|i'll|my|we|we're|our)\b", re.I)
# Tried in the order above, so "I am" is turned before "I".
_PERSON_WORD = re.compile(r"\b(" + "|".join(map(re.escape, _TO_SECOND_PERSON)) + r")\b", re.I)
_SENTENCE_START = re.compile(r"([.!]\s+)([a-z])")
# Where a preamble ("Let me tell you that", "Correction,") ends and the statement begins.
_CLAUSE_START = re.compile(r"(?::|,|\bthat)\s+", re.I)


def acknowledgement(statement: str) -> str:
    """The reply to a message that tells something: the statement said back in the second
    person, from the clause where its first person begins ("Let me tell you that my dog is Rex." ->
    "Got it: your dog is Rex.").

    Chosen by measurement on the starter (`python bench/acknowledge.py`, 40 held-out
    statements): the model's own reply named the told value and no other 0.30 of the time,
    0.35 begun "Got it. ", 0.65 after one worked turn; what it added after a said-back
    statement was mostly "I'm sorry for any confusion.". Said back, the value is right, the
    user sees what was kept, and the reply is instant.
    """
    said = " ".join(statement[_statement_start(statement) :].split())
    if len(said) > SAID_BACK_CHARACTERS:
        cut = max(said.rfind(end, 0, SAID_BACK_CHARACTERS) for end in (". ", "! "))
        said = said[: cut + 1] if cut > 0 else said[:SAID_BACK_CHARACTERS] + "…"
    said = _PERSON_WORD.sub(lambda m: _TO_SECOND_PERSON[m.group(0).lower()], said)
    said = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), said)
    return ACKNOWLEDGE_PREFIX + (said if said.endswith((".", "!", "…")) else f"{said}.")


def _statement_start(text: str) -> int:
    """Where the part worth saying back begins: the clause holding the first first-person
    word ("Correction, the company I work for..." -> "the company I work for..."), or the
    whole text when no clause break comes before it ("On weekends I hike.")."""
    first_person = _SAID_BY_THE_USER.search(text)
    if first_person is None:
        return 0
    breaks = [m.end() for m in _CLAUSE_START.finditer(text, 0, first_person.start())]
    return breaks[-1] if breaks else 0


# Tasks about a note, as the recall corpus's transcripts ask them (sleep writes its own).
QUESTIONS_PROMPT = "Write questions someone could ask about this note:"
RESTATE_PROMPT = "Restate what you learned from this:"


def note_task(prompt: str, note: str) -> str:
    """The user turn asking for one of the note tasks."""
    return f"{prompt}\n{note}"
