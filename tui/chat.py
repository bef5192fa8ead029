"""The chat pane: one conversation's messages, the prompt, and the reply being written.

Generation runs in a worker thread, so the UI never waits on the model; a message
sent while a reply streams waits its turn. The app around it (tui/app.py) holds
the layout, the engine, the night and the status bar; the pane tells it when
what it shows changed.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Markdown

from assistant.errors import AssistantError
from assistant.runtime import Runtime
from assistant.store.memory import validate_message
from assistant.tui.widgets import MessageView, PromptInput, show_error

UI_FLUSH_SECONDS = 0.03


class ChatPane(Vertical):
    class Changed(Message):
        """What the pane shows changed: the reply's state, and with ``listing`` the
        conversation open or its turns (the conversation list shows them)."""

        def __init__(self, listing: bool = False) -> None:
            super().__init__()
            self.listing = listing

    def __init__(self, runtime: Runtime, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.engine = None
        self.session = None
        self.replying = False
        self.waiting: deque[str] = deque()  # sent while a reply streamed: answered in turn
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        yield VerticalScroll(id="messages")
        yield PromptInput(id="prompt", disabled=True)

    def start(self, engine) -> None:
        """Chat on ``engine``, in a new conversation."""
        self.engine = engine
        self.open(None)
        prompt = self.query_one(PromptInput)
        prompt.disabled = False
        prompt.focus()

    def open(self, conversation_id: int | None) -> None:
        """Open a conversation (None: a new one), held so that no sleep's shredding removes it."""
        from assistant.chat import ChatSession

        config, memory = self.runtime.config, self.runtime.memory
        if conversation_id is None:
            conversation_id = memory.new_conversation(held=True)
        else:
            memory.hold_conversation(conversation_id)
        self.release(keep=conversation_id)
        self.session = ChatSession(
            memory,
            self.engine,
            conversation_id,
            max_reply_tokens=config.max_reply_tokens,
            temperature=config.temperature,
        )
        messages = self.query_one("#messages", VerticalScroll)
        messages.remove_children()
        messages.mount_all(MessageView(t.role, t.text) for t in self.session.history)
        messages.scroll_end(animate=False)
        self.post_message(self.Changed(listing=True))

    def release(self, keep: int | None = None) -> None:
        """Let sleep shred the open conversation again (unless it is ``keep``)."""
        if self.session is not None and self.session.conversation_id != keep:
            self.runtime.memory.release_conversation(self.session.conversation_id)

    def stop(self) -> None:
        """Stop the reply being written."""
        self._stop.set()

    def last_reply(self) -> MessageView | None:
        """The focused message, or else the last reply."""
        focused = self.app.focused
        if isinstance(focused, MessageView):
            return focused
        return next((v for v in reversed(self.query(MessageView)) if v.role == "assistant"), None)

    @on(PromptInput.Submitted)
    def _send(self, event: PromptInput.Submitted) -> None:
        try:
            validate_message(event.text)
        except AssistantError as error:
            self.query_one(PromptInput).text = event.text  # give it back to edit, not lost
            show_error(self, error)
            return
        messages = self.query_one("#messages", VerticalScroll)
        messages.mount(MessageView("user", event.text))
        messages.scroll_end(animate=False)
        if self.replying:  # answered once the reply being written ends
            self.waiting.append(event.text)
            self.post_message(self.Changed())
            return
        self._start_reply(event.text)

    def _start_reply(self, text: str) -> None:
        reply = MessageView("assistant")
        self.query_one("#messages", VerticalScroll).mount(reply)
        self.replying = True
        self._stop.clear()
        self.post_message(self.Changed())
        self._reply(text, reply, Markdown.get_stream(reply))

    @work(thread=True, exclusive=True, group="reply")
    def _reply(self, text: str, view: MessageView, stream) -> None:
        pending: list[str] = []
        last_flush = time.monotonic()
        call = self.app.call_from_thread

        def flush() -> None:
            if pending:
                call(stream.write, "".join(pending))
                pending.clear()

        def show(piece: str) -> None:
            # Hand text to the UI in batches so its event loop never paces the model.
            nonlocal last_flush
            view.add_text(piece)
            pending.append(piece)
            if time.monotonic() - last_flush >= UI_FLUSH_SECONDS:
                flush()
                last_flush = time.monotonic()

        try:
            self.session.respond(text, on_piece=show, should_stop=self._stop.is_set)
        except AssistantError as error:
            call(show_error, self, error)
        finally:
            flush()
            call(stream.stop)
            call(self._reply_done, view)

    def _reply_done(self, view: MessageView) -> None:
        self.replying = False
        if not view.text.strip():
            view.remove()
        self.query_one("#messages", VerticalScroll).scroll_end(animate=False)
        if self.waiting:
            self._start_reply(self.waiting.popleft())
            return
        self.post_message(self.Changed(listing=True))
