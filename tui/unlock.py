"""The passphrase, asked on a screen of the chat app, never by a terminal prompt.

A worker thread cannot prompt in a terminal that Textual owns (it hangs), so the
app asks here when the memory is locked with a passphrase, or is new with no OS
keychain to keep its key, and ASSISTANT_PASSPHRASE is not set. The key is derived
and checked in a worker; nothing is written before it is verified, and a new
passphrase must be typed twice alike before it is used.
"""

from __future__ import annotations

import os

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static

from assistant.errors import AssistantError
from assistant.runtime import Runtime
from assistant.store.keys import PASSPHRASE_ENV, current_source, keyring_usable


def unlock_screen_for(runtime: Runtime) -> UnlockScreen | None:
    """The screen that asks for the passphrase, or None when the key needs no typing."""
    if os.environ.get(PASSPHRASE_ENV):
        return None
    source = current_source(runtime.database)
    if source == "passphrase":
        return UnlockScreen(runtime, new=False)
    if source is None and not keyring_usable():
        return UnlockScreen(runtime, new=True)
    return None


class UnlockScreen(Screen[None]):
    """Unlocks ``runtime.memory`` with a typed passphrase (creating the key if ``new``)."""

    DEFAULT_CSS = """
    UnlockScreen { align: center middle; }
    #unlock { width: 64; height: auto; border: round $accent; padding: 1 2; }
    #unlock Input { margin-top: 1; }
    #unlock-message { margin-top: 1; }
    #unlock-message.-refused { color: $error; }
    """

    def __init__(self, runtime: Runtime, new: bool) -> None:
        super().__init__()
        self.runtime = runtime
        self.new = new

    def compose(self) -> ComposeResult:
        with Vertical(id="unlock"):
            if self.new:
                yield Label("Choose a passphrase for your memory")
                yield Static(
                    "Every message is kept encrypted under a key made from it. There is no way"
                    " back in without it: keep it somewhere safe."
                )
            else:
                yield Label("Your memory is locked")
            yield Input(password=True, placeholder="Passphrase", id="passphrase")
            if self.new:
                yield Input(password=True, placeholder="The same passphrase again", id="confirm")
            yield Static("", id="unlock-message")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#passphrase", Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if self.new and event.input.id == "passphrase":
            self.query_one("#confirm", Input).focus()
            return
        passphrase = self.query_one("#passphrase", Input).value
        if self.new and passphrase != self.query_one("#confirm", Input).value:
            self._try_again("The two passphrases do not match. Type them again.")
            return
        self._say("Unlocking...")
        self.query_one("#unlock").disabled = True
        self._unlock(passphrase)

    @work(thread=True, exclusive=True)
    def _unlock(self, passphrase: str) -> None:
        self.runtime.passphrase_prompt = lambda _new: passphrase
        try:
            self.runtime.memory  # noqa: B018 - derives and checks the key (first run: creates it)
        except AssistantError as error:
            self.app.call_from_thread(self._try_again, f"{error} Try again.")
            return
        finally:
            self.runtime.passphrase_prompt = None
        self.app.call_from_thread(self.dismiss)

    def _try_again(self, message: str) -> None:
        self.query_one("#unlock").disabled = False
        for field in self.query(Input):
            field.clear()
        self.query_one("#passphrase", Input).focus()
        self._say(message, refused=True)

    def _say(self, message: str, refused: bool = False) -> None:
        note = self.query_one("#unlock-message", Static)
        note.update(message)
        note.set_class(refused, "-refused")
