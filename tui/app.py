"""The chat app: the layout, the engine, the conversation list, the status bar, and the
night an unlocked app starts; the conversation itself is the chat pane (tui/chat.py).

An unexpected error never reaches Textual's crash screen, whose traceback shows local
variables (what the user typed): it becomes a plain message naming only its type.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ListItem, ListView, Static

from assistant.errors import AssistantError, NoModelError
from assistant.runtime import Runtime
from assistant.sleep.report import SleepReport
from assistant.sleep.trigger.policy import Sensors
from assistant.sleep.trigger.sensors import OPEN_BEAT_SECONDS, Heartbeat
from assistant.tui.adapters import AdaptersScreen
from assistant.tui.chat import ChatPane
from assistant.tui.screens import NoModelScreen
from assistant.tui.unlock import unlock_screen_for
from assistant.tui.widgets import PromptInput, show_error

AWAKE_POLL_SECONDS = 0.5
USE_BEAT_SECONDS = 1.0  # at most one "in use" beat per second of typing
NIGHT_CHECK_SECONDS = 300.0  # how often an app unlocked with a passphrase checks if it is night


class AssistantApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "assistant"
    BINDINGS = [
        Binding("escape", "stop_reply", "Stop reply"),
        Binding("ctrl+n", "new_conversation", "New chat"),
        Binding("ctrl+y", "copy_message", "Copy message"),
        Binding("f2", "adapters", "What I learned"),
    ]

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        runtime.passphrase_prompt = None  # asked on the unlock screen, never from a worker
        self.engine = None
        self.chat = ChatPane(runtime)
        self.heartbeat = Heartbeat(runtime.paths.data_dir)
        self._last_beat = float("-inf")
        self.sensors = Sensors()
        self._night = None  # the `sleep auto` process this app started, while it runs

    def _beat(self) -> None:
        """The person used the app: idleness counts from here."""
        self.heartbeat.beat()
        self._last_beat = time.monotonic()

    async def on_event(self, event: events.Event) -> None:
        # Seen here before any widget consumes it: the prompt keeps the keys typed into it.
        is_input = isinstance(event, (events.Key, events.MouseDown)) and not event.is_forwarded
        if is_input and time.monotonic() - self._last_beat >= USE_BEAT_SECONDS:
            self._beat()
        await super().on_event(event)

    def _handle_exception(self, error: Exception) -> None:
        """Textual's hook for every unhandled error, from a handler or a worker.

        A failed worker leaves the app usable; an error on the UI thread has stopped
        its message loop, so the app closes, saying so plainly.
        """
        from textual.worker import WorkerFailed

        failed = error.error if isinstance(error, WorkerFailed) else error
        kind = type(failed).__name__
        if isinstance(error, WorkerFailed):
            self.notify(
                f"An internal error ({kind}) stopped that. Try again, or restart the assistant.",
                title="Error",
                severity="error",
                timeout=15,
            )
            return
        self._return_code = 1
        self.panic(f"The assistant closed after an internal error ({kind}).")

    # -- layout ---------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("Conversations", id="sidebar-title")
                yield ListView(id="conversations")
            yield self.chat
        yield Static("loading...", id="status")
        yield Footer()

    def on_mount(self) -> None:
        from assistant.store import lock

        # Asked before the first beat, which wakes a running sleep (`sleep auto` then also
        # waits until the app goes quiet).
        self._woke_a_sleep = lock.sleeping(self.runtime.paths.writer_lock)
        self._beat()  # opening the app is a use of it
        self.heartbeat.beat_open()
        if self._woke_a_sleep:
            self.notify(
                "I was sleeping to learn from our conversations and am waking up."
                " Nothing is lost; I will finish another time.",
                title="Waking up",
                timeout=15,
            )
        self.set_interval(OPEN_BEAT_SECONDS, self.heartbeat.beat_open)
        self.runtime.notice = self.show_notice  # e.g. the starter model registered
        unlock = unlock_screen_for(self.runtime)
        if unlock is None:
            self._load_engine()
        else:
            self.push_screen(unlock, lambda _: self._load_engine())

    @work(thread=True, exclusive=True, group="engine")
    def _load_engine(self) -> None:
        from assistant.sleep.status import unseen_report

        try:
            engine = self.runtime.load_engine()  # with every committed expert (or the starter)
            self.runtime.memory  # noqa: B018 - unlock in the worker, not the UI thread
            report = unseen_report(self.runtime)
        except NoModelError:
            self.call_from_thread(self.push_screen, NoModelScreen())
            return
        except AssistantError as error:
            self.call_from_thread(self.show_error, error)
            return
        self.call_from_thread(self._engine_ready, engine, report)

    def _engine_ready(self, engine, report: SleepReport | None) -> None:
        self.engine = engine
        self._show_report(report)
        self.chat.start(engine)
        if self._woke_a_sleep:
            self._awake_timer = self.set_interval(AWAKE_POLL_SECONDS, self._check_awake)
        self._night_timer = self.set_interval(NIGHT_CHECK_SECONDS, self._sleep_if_due)

    @work(thread=True, exclusive=True, group="night")
    def _sleep_if_due(self) -> None:
        """For a memory the scheduled job cannot unlock (a passphrase is never stored), this
        unlocked app starts the night when every condition holds (see
        assistant.sleep.trigger.auto)."""
        from assistant.sleep.status import unseen_report
        from assistant.sleep.trigger.auto import sleep_through_app

        if self._night is not None:
            if self._night.poll() is None:
                return
            failed, self._night = self._night.returncode != 0, None
            if failed:  # e.g. the key was rotated since this app unlocked: no retrying
                self._night_timer.stop()
                self.call_from_thread(
                    self.show_notice,
                    "The night could not start (see sleep-auto.log); reopen the app.",
                )
                return
            self.call_from_thread(self.reload_experts)  # apply what it committed
            self.call_from_thread(self._show_report, unseen_report(self.runtime))
        self._night = sleep_through_app(self.runtime, self.sensors)

    def _check_awake(self) -> None:
        """Once the sleep has stopped: apply whatever it committed and say how it ended."""
        from assistant.sleep.status import unseen_report
        from assistant.store import lock

        if lock.sleeping(self.runtime.paths.writer_lock):
            return
        self._awake_timer.stop()
        self.reload_experts()
        self._show_report(unseen_report(self.runtime))

    def _show_report(self, report: SleepReport | None) -> None:
        if report is not None:
            self.notify(report.summary(), title="While you were away", timeout=30)

    # -- conversations --------------------------------------------------------
    def on_unmount(self) -> None:
        self.chat.release()

    @on(ChatPane.Changed)
    def _chat_changed(self, event: ChatPane.Changed) -> None:
        if event.listing:
            self._refresh_sidebar()
        self._refresh_status()

    def _refresh_sidebar(self) -> None:
        listing = self.query_one("#conversations", ListView)
        listing.clear()
        conversations = self.runtime.memory.conversations()
        current = self.chat.session.conversation_id if self.chat.session else None
        ids = [c.id for c in conversations]
        if current is not None and current not in ids:
            ids.append(current)
        counts = {c.id: c.turn_count for c in conversations}
        titles = self.runtime.memory.first_messages()  # decrypted here, shown, never stored
        for conversation_id in reversed(ids):
            count = counts.get(conversation_id, 0)
            title = _title(titles.get(conversation_id, ""))
            label = f"{title}  ({count} turn{'s' * (count != 1)})" if count else title
            listing.append(ListItem(Label(label), name=str(conversation_id)))

    def _refresh_status(self) -> None:
        model = self.runtime.models.active()
        experts = len(self.engine.experts) if self.engine else 0
        notes = len(self.chat.session.notes) if self.chat.session else 0
        text = (
            f"model: {model.name if model else '-'}  |  experts: {experts}"
            f"  |  things told, not yet learned: {notes}"
        )
        if self.chat.replying:
            text += "  |  replying (Esc stops)"
        if self.chat.waiting:
            text += f"  |  {len(self.chat.waiting)} waiting"
        self.query_one("#status", Static).update(text)

    @on(ListView.Selected, "#conversations")
    def _switch(self, event: ListView.Selected) -> None:
        if self.chat.replying or event.item.name is None:
            return
        try:
            self.chat.open(int(event.item.name))
        except AssistantError as error:  # cleared by a sleep since the list was drawn
            self.show_error(error)
            self._refresh_sidebar()
        self.query_one(PromptInput).focus()

    def reload_experts(self) -> None:
        """Apply the experts the registry now lists (after a reset or an import)."""
        if self.engine is not None:
            try:
                self.engine.set_experts(self.runtime.expert_specs())
            except AssistantError as error:  # e.g. an expert file refused: chat goes on
                self.show_error(error)
            self._refresh_status()

    def show_notice(self, line: str) -> None:
        """News for the user, from the UI thread or a worker."""
        if threading.get_ident() == self._thread_id:
            self.notify(line, timeout=15)
        else:
            self.call_from_thread(self.notify, line, timeout=15)

    def show_error(self, error: AssistantError) -> None:
        show_error(self, error)

    # -- actions --------------------------------------------------------------
    def action_stop_reply(self) -> None:
        self.chat.stop()

    def action_new_conversation(self) -> None:
        if self.engine is not None and not self.chat.replying:
            self.chat.open(None)
            self.query_one(PromptInput).focus()

    def action_adapters(self) -> None:
        if self.chat.replying:
            self.notify("Wait for the reply to finish (Esc stops it).", severity="warning")
            return
        self.push_screen(AdaptersScreen())

    def action_copy_message(self) -> None:
        target = self.chat.last_reply()
        if target is None or not target.text:
            self.notify("Nothing to copy yet.")
            return
        self.copy_to_clipboard(target.text)
        self.notify("Message copied.")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand(
            "New conversation", "Start a fresh conversation", self.action_new_conversation
        )
        yield SystemCommand("Stop reply", "Stop the reply being written", self.action_stop_reply)
        yield SystemCommand(
            "Copy message", "Copy the selected (or last) reply", self.action_copy_message
        )
        yield SystemCommand(
            "What I learned", "List, export or forget the learned experts", self.action_adapters
        )
        yield SystemCommand(
            "Switch conversation",
            "Move to the conversation list",
            lambda: self.query_one("#conversations").focus(),
        )


TITLE_CHARACTERS = 28


def _title(first_message: str) -> str:
    """A conversation's name in the list: its first message, cut short."""
    words = " ".join(first_message.split())
    if not words:
        return "New conversation"
    return words if len(words) <= TITLE_CHARACTERS else words[: TITLE_CHARACTERS - 1] + "…"


def run_app(runtime: Runtime) -> None:
    AssistantApp(runtime).run()
