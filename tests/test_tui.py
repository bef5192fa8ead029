"""The Textual app under its pilot: first-run screen, a streamed reply, bad input."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import Static

from assistant.runtime import Runtime
from assistant.tui.app import AssistantApp
from assistant.tui.screens import NoModelScreen
from assistant.tui.widgets import MessageView, PromptInput

pytestmark = pytest.mark.asyncio


async def wait_until(pilot, condition, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting for the app")
        await pilot.pause(0.05)


async def ready(pilot) -> PromptInput:
    """Wait for the model to load; return the enabled prompt input."""
    prompt = pilot.app.query_one(PromptInput)
    await wait_until(pilot, lambda: not prompt.disabled)
    return prompt


def status_text(app: AssistantApp) -> str:
    return str(app.query_one("#status", Static).content)


async def test_without_the_starter_the_no_model_screen_explains_how_to_add_one(home, monkeypatch):
    monkeypatch.setattr("assistant.models.registry.starter_gguf", lambda: None)  # broken install
    app = AssistantApp(Runtime())
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, NoModelScreen))
        await wait_until(pilot, lambda: "assistant model add" in _no_model_text(app))


def _no_model_text(app: AssistantApp) -> str:
    """The screen's text once its Markdown has mounted (it fills in after the screen shows)."""
    shown = app.screen.query("#no-model")
    return shown.first().source if shown else ""


@pytest.mark.slow
async def test_first_run_opens_the_chat_on_the_starter_and_streams_a_reply(home):
    runtime = Runtime()
    app = AssistantApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = await ready(pilot)
        assert runtime.models.active().name == "smollm2"
        assert "model: smollm2" in status_text(app)
        assert any("starter model smollm2" in note.message for note in app._notifications)
        prompt.focus()
        await pilot.press(*"Hello! Who are you?", "enter")
        await wait_until(pilot, lambda: not app.chat.replying and len(app.query(MessageView)) == 2)
        reply = app.query(MessageView)[1]
        assert reply.role == "assistant" and reply.text.strip()


async def test_message_gets_a_streamed_reply_and_is_remembered(model_home):
    runtime = Runtime()
    app = AssistantApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = await ready(pilot)
        assert "things told, not yet learned: 0" in status_text(app)
        await sidebar_shows(pilot, ["New conversation"])
        prompt.focus()
        await pilot.press(*"Tell me a story", "shift+enter", *"about a cat")
        assert prompt.text == "Tell me a story\nabout a cat"
        await pilot.press("enter")
        await wait_until(pilot, lambda: not app.chat.replying and len(app.query(MessageView)) == 2)
        user, reply = app.query(MessageView)
        assert user.text == "Tell me a story\nabout a cat"
        assert reply.role == "assistant" and reply.text.strip()
        assert "things told, not yet learned: 0" in status_text(app)  # a request tells nothing
        assert "model: tiny" in status_text(app)
        await sidebar_shows(pilot, ["Tell me a story about a cat  (2 turns)"])
        assert prompt.text == ""

        app.action_copy_message()
        assert app.clipboard == reply.text

        await pilot.press("ctrl+n")
        await pilot.pause()
        assert len(app.query(MessageView)) == 0
        assert app.chat.session.conversation_id != user_conversation(runtime)
    assert runtime.memory.count() == 2


@pytest.mark.slow
async def test_a_fact_told_is_read_back_in_this_conversation_and_in_new_ones(home):
    """On the starter: told a fact, chat says it back; asked about it here, in a new
    conversation, and in another after that question was asked, it answers from the
    statement, never from the earlier question."""
    app = AssistantApp(Runtime())
    question = "What is my daughter called?"
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = await ready(pilot)
        replies = []
        for new_conversation, said in [
            (False, "My daughter's name is Elowen and she is seven."),
            (False, question),
            (True, question),
            (True, question),
        ]:
            if new_conversation:
                await pilot.press("ctrl+n")
                await wait_until(pilot, lambda: len(app.query(MessageView)) == 0)
            prompt.focus()
            await pilot.press(*said, "enter")
            await wait_until(pilot, lambda: not app.chat.replying and app.query(MessageView))
            await wait_until(pilot, lambda: app.query(MessageView)[-1].role == "assistant")
            replies.append(app.query(MessageView)[-1].text)
    assert replies[0] == "Got it: your daughter's name is Elowen and she is seven."
    for reply in replies:
        assert "Elowen" in reply and question not in reply, replies


def sidebar_labels(app: AssistantApp) -> list[str]:
    return [str(label.content) for label in app.query("#conversations Label")]


async def sidebar_shows(pilot, labels: list[str]) -> None:
    """The list redraws by mounting, a few frames after the change that redraws it."""
    try:
        await wait_until(pilot, lambda: sidebar_labels(pilot.app) == labels, timeout=10)
    except AssertionError:
        assert sidebar_labels(pilot.app) == labels


async def test_a_message_sent_during_a_reply_is_answered_after_it(model_home):
    import threading

    runtime = Runtime()
    app = AssistantApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = await ready(pilot)
        typed = threading.Event()  # the reply streams its first piece, then waits for typing
        stream = app.engine.stream

        def stream_held(*args, **kwargs):
            for i, piece in enumerate(stream(*args, **kwargs)):
                yield piece
                if i == 0:
                    typed.wait(timeout=60)

        app.engine.stream = stream_held
        prompt.focus()
        await pilot.press(*"Tell me a long story.", "enter")
        await wait_until(pilot, lambda: app.chat.replying)
        await pilot.press(*"My cat is called Mittens.", "enter")  # typed while it streams
        assert app.chat.replying and "1 waiting" in status_text(app)
        assert prompt.text == ""
        typed.set()
        await wait_until(pilot, lambda: not app.chat.replying and len(app.query(MessageView)) == 4)
        views = [(v.role, v.text) for v in app.query(MessageView)]
        assert [role for role, _ in views] == ["user", "assistant", "user", "assistant"]
        assert views[2:] == [
            ("user", "My cat is called Mittens."),
            ("assistant", "Got it: your cat is called Mittens."),
        ]
        assert "things told, not yet learned: 1" in status_text(app)
        assert "waiting" not in status_text(app)
    stored = runtime.memory.conversation(app.chat.session.conversation_id)
    assert [(t.role, t.text) for t in stored][2:] == views[2:]
    assert stored[1].text == views[1][1].strip()


def user_conversation(runtime: Runtime) -> int:
    return runtime.memory.conversations()[0].id


async def test_bad_message_is_reported_and_not_stored(model_home):
    runtime = Runtime()
    app = AssistantApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = await ready(pilot)
        prompt.post_message(PromptInput.Submitted("binary\x00junk"))
        await wait_until(pilot, lambda: any("NUL bytes" in n.message for n in app._notifications))
        assert list(app.query(MessageView)) == []
        assert prompt.text == "binary\x00junk"  # handed back for editing, not lost
    assert runtime.memory.count() == 0


@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
async def test_the_next_start_shows_the_night_report_once_and_loads_the_expert(home):
    # A short night of the starter with its gates open (see tests/test_sleep.py).
    from tests import nights

    nights.configure(home, nights.GATES_OPEN)
    nights.tell("My cat is called Mittens.")
    assert nights.sleep_now()["outcome"] == "consolidated"

    for first_start in (True, False):
        app = AssistantApp(Runtime())
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            await pilot.pause(0.3)  # a notification arrives as a message of its own
            titles = [n.title for n in app._notifications]
            assert ("While you were away" in titles) is first_start
            assert "experts: 1" in status_text(app)
            assert "things told, not yet learned: 0" in status_text(app)


@pytest.mark.slow
async def test_opening_the_app_wakes_a_sleep_and_says_so(model_home):
    """The heartbeat from the app's start stops an automatic sleep within a step; the app
    is usable meanwhile, and says how the sleep ended once it has."""
    import json
    import os
    import sqlite3
    import subprocess
    import sys

    from click.testing import CliRunner

    from assistant.cli import cli

    (model_home / "config").mkdir(exist_ok=True)
    (model_home / "config" / "config.json").write_text(
        json.dumps(
            {
                "sleep_window": "00:00-00:00",  # all day
                "sleep_min_idle_minutes": 0,
                "sleep_min_turns": 1,
                "sleep_steps": 100_000,  # far more than it gets to run
                "sleep_budget_minutes": 30,
            }
        )
    )
    for message in ("My dog is called Rex.", "My sister lives in Lisbon."):
        assert CliRunner().invoke(cli, ["chat", "--once", message]).exit_code == 0
    database = model_home / "data" / "assistant.db"

    def sleeps() -> list[tuple[str, str | None]]:
        with sqlite3.connect(database) as conn:
            return conn.execute("SELECT stage, outcome FROM sleeps").fetchall()

    process = subprocess.Popen(
        [sys.executable, "-m", "assistant", "sleep", "auto"],
        env={**os.environ, "ASSISTANT_HOME": str(model_home)},
        stderr=subprocess.PIPE,
    )
    try:
        while sleeps() != [("learning", None)]:
            assert process.poll() is None, process.stderr.read()
            await asyncio.sleep(0.2)
        app = AssistantApp(Runtime())
        async with app.run_test(size=(120, 40)) as pilot:
            await ready(pilot)
            titles = lambda: [n.title for n in app._notifications]  # noqa: E731
            await wait_until(pilot, lambda: "While you were away" in titles())
            assert "Waking up" in titles()
            report = next(n for n in app._notifications if n.title == "While you were away")
            assert "pick up where I stopped" in report.message
        assert process.wait(timeout=60) == 0, process.stderr.read()
    finally:
        process.kill()
    assert sleeps() == [("paused", "interrupted")]
    log = (model_home / "data" / "sleep-auto.log").read_text()
    assert "sleep 1: interrupted (the chat app was opened)" in log
    assert list((model_home / "data" / "experts").iterdir()) == []
    assert len(list((model_home / "data" / "checkpoints").iterdir())) == 1
