"""The passphrase asked on a Textual screen, never by click from a worker."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static

from assistant.runtime import Runtime
from assistant.store.keys import current_source, unlock
from assistant.tui.app import AssistantApp
from assistant.tui.unlock import UnlockScreen
from tests.conftest import TEST_PASSPHRASE
from tests.test_tui import ready, wait_until

pytestmark = pytest.mark.asyncio


def _said(app: AssistantApp) -> str:
    return str(app.screen.query_one("#unlock-message", Static).content)


async def _type(pilot, field: str, text: str) -> None:
    pilot.app.screen.query_one(f"#{field}", Input).focus()
    await pilot.press(*text, "enter")


@pytest.fixture
def no_keychain(monkeypatch):
    """No OS keychain: keyring's backend is process-wide once chosen, so it is set, not
    taken from the environment."""
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    monkeypatch.delenv("ASSISTANT_PASSPHRASE")
    yield
    keyring.set_keyring(previous)


async def test_a_wrong_passphrase_is_refused_on_the_screen_and_the_right_one_opens(
    model_home, no_keychain
):
    created = Runtime()
    created.passphrase_prompt = lambda new: TEST_PASSPHRASE
    created.memory.append(created.memory.new_conversation(), "user", "hello")
    meta = created.database.execute("SELECT * FROM meta ORDER BY key").fetchall()

    runtime = Runtime()
    app = AssistantApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, UnlockScreen))
        await _type(pilot, "passphrase", "not my passphrase")
        await wait_until(pilot, lambda: "Wrong passphrase" in _said(app))
        assert isinstance(app.screen, UnlockScreen)
        assert app.screen.query_one("#passphrase", Input).value == ""
        assert created.database.execute("SELECT * FROM meta ORDER BY key").fetchall() == meta
        assert created.database.execute("SELECT count(*) FROM conversations").fetchone() == (1,)

        await _type(pilot, "passphrase", TEST_PASSPHRASE)
        await ready(pilot)
        assert runtime.memory.count() == 1


async def test_a_first_run_asks_for_a_new_passphrase_twice(model_home, no_keychain):
    runtime = Runtime()
    app = AssistantApp(runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, UnlockScreen))
        await _type(pilot, "passphrase", "first try")
        await _type(pilot, "confirm", "first tyr")
        await wait_until(pilot, lambda: "do not match" in _said(app))
        assert current_source(runtime.database) is None  # nothing written

        await _type(pilot, "passphrase", TEST_PASSPHRASE)
        await _type(pilot, "confirm", TEST_PASSPHRASE)
        await ready(pilot)
    assert current_source(runtime.database) == "passphrase"
    unlock(runtime.database, runtime.paths.key_file, lambda new: TEST_PASSPHRASE)


async def test_an_app_unlocked_with_a_passphrase_starts_the_night_itself(
    model_home, no_keychain, monkeypatch
):
    import asyncio
    import json

    from assistant.sleep.trigger.auto import LOG_FILE
    from tests.test_auto_sleep import _sensors

    monkeypatch.setattr("assistant.tui.app.NIGHT_CHECK_SECONDS", 0.2)
    (model_home / "config").mkdir(parents=True, exist_ok=True)
    (model_home / "config" / "config.json").write_text(json.dumps({"sleep_min_idle_minutes": 0}))
    created = Runtime()
    created.passphrase_prompt = lambda new: TEST_PASSPHRASE
    conversation = created.memory.new_conversation()
    for i in range(12):
        created.memory.append(conversation, "user", f"message {i}")
    log = model_home / "data" / LOG_FILE

    app = AssistantApp(Runtime())
    app.sensors = _sensors()  # on the charger, in the night window
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, UnlockScreen))
        await _type(pilot, "passphrase", TEST_PASSPHRASE)
        await ready(pilot)
        await wait_until(pilot, lambda: app._night is not None)
        # The night judges the conditions again with this machine's own sensors; it had the
        # key, so it never says the memory is locked.
        assert await asyncio.to_thread(app._night.wait, 120) == 0
    lines = log.read_text().splitlines()
    assert lines and "locked with a passphrase" not in lines[-1]
