"""The chat app next to a sleep: it survives the shredding, fails politely, and idles honestly."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime

import pytest

from assistant.runtime import Runtime
from assistant.sleep.trigger.policy import Sensors, readiness
from assistant.sleep.trigger.sensors import Heartbeat, Reading
from assistant.store.keys import unlock
from assistant.store.memory import MemoryStore
from assistant.tui.app import AssistantApp
from assistant.tui.widgets import MessageView
from tests.test_tui import ready, wait_until

pytestmark = pytest.mark.asyncio

SECRET = "my PIN is 4321"


async def _say(pilot, text: str, views: int) -> None:
    await pilot.press(*text, "enter")
    app = pilot.app
    await wait_until(pilot, lambda: not app.chat.replying and len(app.query(MessageView)) == views)


async def test_the_chat_goes_on_after_a_sleep_in_another_process_shreds_its_turns(model_home):
    runtime = Runtime()
    app = AssistantApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        (await ready(pilot)).focus()
        await _say(pilot, "Hello there, how are you today?", views=2)
        conversation = app.chat.session.conversation_id

        # A real night in another process: small talk holds nothing to learn, so it shreds.
        night = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "assistant", "sleep", "--now", "--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert night.returncode == 0, night.stderr
        assert json.loads(night.stdout)["outcome"] == "nothing new"
        assert runtime.memory.count() == 0

        await _say(pilot, "And my dog is Rex", views=4)
        assert [n for n in app._notifications if n.severity == "error"] == []
        assert app.chat.session.conversation_id == conversation
        turns = runtime.memory.conversation(conversation)
        assert [t.text for t in turns][0] == "And my dog is Rex"


class StoreThatFails(MemoryStore):
    """A store broken from inside once ``fail_in`` names a method: its error carries user text."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime.database, unlock(runtime.database, runtime.paths.key_file))
        self.fail_in: str | None = None

    def append(self, conversation_id: int, role: str, text: str):
        if self.fail_in == "append":
            raise RuntimeError(f"could not store {text!r}")
        return super().append(conversation_id, role, text)

    def conversation(self, conversation_id: int):
        if self.fail_in == "conversation":
            raise ValueError(f"conversation {conversation_id} broke near {SECRET!r}")
        return super().conversation(conversation_id)


def _app_with_failing_store() -> tuple[AssistantApp, StoreThatFails]:
    runtime = Runtime()
    store = runtime.memory = StoreThatFails(runtime)
    return AssistantApp(runtime), store


def _shown(app: AssistantApp) -> str:
    """Every notification, and whatever the app leaves to print when it exits."""
    notes = [f"{n.title}\n{n.message}" for n in app._notifications]
    exits = [_plain(r) for r in app._exit_renderables]
    return "\n".join(notes + exits)


def _plain(renderable) -> str:
    segments = getattr(renderable, "segments", None)  # pre-rendered by App.panic
    return str(renderable) if segments is None else "".join(s.text for s in segments)


async def test_an_internal_error_in_a_worker_is_a_plain_message_and_the_chat_goes_on(model_home):
    app, store = _app_with_failing_store()
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = await ready(pilot)
        store.fail_in = "append"
        prompt.focus()
        await pilot.press(*SECRET, "enter")
        await wait_until(pilot, lambda: "internal error" in _shown(app))
        await wait_until(pilot, lambda: not app.chat.replying)
        assert "4321" not in _shown(app) and "Traceback" not in _shown(app)
        assert app.is_running and app.return_code is None
        await pilot.press(*"still here")
        assert prompt.text == "still here"


async def test_an_internal_error_in_the_ui_closes_the_app_with_a_plain_message(model_home):
    app, store = _app_with_failing_store()
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        store.fail_in = "conversation"
        app.call_later(app.action_new_conversation)  # Ctrl+N: runs on the UI thread
        for _ in range(600):  # the UI loop stops with the error: no pilot.pause any more
            if app.return_code is not None:
                break
            await asyncio.sleep(0.05)
        shown = _shown(app)
    assert app.return_code == 1
    assert "internal error (ValueError)" in shown
    assert "4321" not in shown and "Traceback" not in shown


def _app_counts_as_idle(runtime: Runtime) -> bool:
    sensors = Sensors(
        power=lambda: Reading(True, "test", "fabricated"),
        idle=lambda: Reading(None, "test", "no OS idle sensor"),
        now=lambda: datetime.now().astimezone(),
    )
    verdict = readiness(runtime.config, runtime.database, runtime.paths.data_dir, sensors)
    return next(c for c in verdict.conditions if c.name == "idle").holds


async def test_an_open_app_without_input_is_idle_and_typing_is_not(model_home, monkeypatch):
    monkeypatch.setattr("assistant.tui.app.OPEN_BEAT_SECONDS", 0.05)  # beats while open
    runtime = Runtime()
    app = AssistantApp(runtime)
    heartbeat = Heartbeat(runtime.paths.data_dir)
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = await ready(pilot)
        prompt.focus()
        hours_ago = time.time() - 3 * 3600
        os.utime(heartbeat.path, (hours_ago, hours_ago))  # last input long ago
        await pilot.pause(0.5)  # the app beats several times meanwhile
        assert _app_counts_as_idle(runtime)
        assert heartbeat.is_open()

        app._last_beat = float("-inf")  # a key press beats at most once a second
        await pilot.press("h")
        assert not _app_counts_as_idle(runtime)
