"""Small widgets of the chat screen."""

from __future__ import annotations

from textual import events
from textual.app import App
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Markdown, TextArea

from assistant.errors import AssistantError


def show_error(node: App | Widget, error: AssistantError) -> None:
    """The error and what to do about it, as a notification."""
    message = str(error) + (f"\n{error.hint}" if error.hint else "")
    node.notify(message, title="Error", severity="error", timeout=10)


class PromptInput(TextArea):
    """Multi-line input: Enter sends, Shift+Enter or Ctrl+J starts a new line."""

    class Submitted(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()
            event.stop()
            text = self.text
            if text.strip():
                self.clear()
                self.post_message(self.Submitted(text))
            return
        if event.key in ("shift+enter", "ctrl+j"):
            event.prevent_default()
            event.stop()
            self.insert("\n")
            return
        await super()._on_key(event)


class MessageView(Markdown):
    """One chat message rendered as markdown; focusable so it can be copied."""

    can_focus = True

    def __init__(self, role: str, text: str = "") -> None:
        super().__init__(text, classes=role)
        self.role = role
        self.text = text

    def add_text(self, piece: str) -> None:
        self.text += piece
