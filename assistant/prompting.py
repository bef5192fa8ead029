"""How a chat prompt is laid out: system prompt, history, and the message with its notes.

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
"""

from __future__ import annotations

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


# Tasks about a note, as the recall corpus's transcripts ask them (sleep writes its own).
QUESTIONS_PROMPT = "Write questions someone could ask about this note:"
RESTATE_PROMPT = "Restate what you learned from this:"


def note_task(prompt: str, note: str) -> str:
    """The user turn asking for one of the note tasks."""
    return f"{prompt}\n{note}"
