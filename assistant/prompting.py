"""How a chat prompt is laid out: system prompt, today's memories, history, question.

The demo model is trained on exactly this layout, so change it only together
with the corpus generator.
"""

from __future__ import annotations

from collections.abc import Sequence

SYSTEM_PROMPT = (
    "You are a personal assistant running on the user's own computer. Answer briefly. "
    "Use what the user has told you. If you do not know something about the user, "
    "say that they have not told you."
)
NOTES_HEADER = "Earlier today the user told you:"


def system_message(notes: Sequence[str]) -> dict[str, str]:
    """The system turn, with retrieved memories appended as a bullet list."""
    content = SYSTEM_PROMPT
    if notes:
        content += "\n\n" + NOTES_HEADER + "\n" + "\n".join(f"- {note}" for note in notes)
    return {"role": "system", "content": content}


def chat_messages(
    notes: Sequence[str], history: Sequence[tuple[str, str]], user_text: str
) -> list[dict[str, str]]:
    """Messages for the chat template: system (+notes), earlier (role, text) turns, the new one."""
    messages = [system_message(notes)]
    messages += [{"role": role, "content": text} for role, text in history]
    messages.append({"role": "user", "content": user_text})
    return messages


# The two tasks sleep asks of the model about a note (the demo model is trained on them).
QUESTIONS_PROMPT = "Write questions someone could ask about this note:"
RESTATE_PROMPT = "Restate what you learned from this:"


def note_task(prompt: str, note: str) -> str:
    """The user turn asking for one of the note tasks."""
    return f"{prompt}\n{note}"
