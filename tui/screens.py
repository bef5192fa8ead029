"""Screens other than the chat: the first-run screen when no model is registered."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Markdown, ProgressBar, Static

from assistant.errors import AssistantError

NO_MODEL_TEXT = """\
# No model yet

The assistant runs a language model on this computer, and none is installed.

**Try it offline now:** build the small demo model. It is trained here, once, from a
synthetic personal-assistant corpus (about 15 minutes on a laptop; later starts reuse it).
It only knows how to chat about what you tell it, which is enough to see it learn overnight.

Or add a real model from a terminal, then start `assistant` again:

```
assistant model add Qwen/Qwen2.5-0.5B-Instruct --quant q8_0
assistant model add /path/to/model        # a Hugging Face directory with config.json
```

`assistant model list` shows what is installed; `assistant paths` shows where it is kept.
"""


class NoModelScreen(Screen[bool]):
    """Explains how to add a model, and builds the demo model on request.

    Dismissed with True once a model is registered, so the app can load it.
    """

    BINDINGS = [Binding("q", "app.quit", "Quit")]

    def __init__(self, demo_preset: str = "full") -> None:
        super().__init__()
        self.demo_preset = demo_preset

    def compose(self) -> ComposeResult:
        with VerticalScroll(), Center():
            yield Markdown(NO_MODEL_TEXT, id="no-model")
            yield Button("Build the demo model", id="build-demo", variant="primary")
            yield ProgressBar(id="demo-progress", show_eta=True)
            yield Static("", id="demo-status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#demo-progress").display = False

    @on(Button.Pressed, "#build-demo")
    def _start_build(self, event: Button.Pressed) -> None:
        event.button.disabled = True
        self.query_one("#demo-progress").display = True
        self.query_one("#demo-status", Static).update("Preparing the corpus and tokenizer...")
        self._build_demo()

    @work(thread=True, exclusive=True, group="demo")
    def _build_demo(self) -> None:
        from assistant.demo.build import build_demo, register_demo

        runtime = self.app.runtime
        bar = self.query_one("#demo-progress", ProgressBar)
        status = self.query_one("#demo-status", Static)

        def advance(step: int, steps: int, loss: float) -> None:
            self.app.call_from_thread(bar.update, total=steps, progress=step)
            self.app.call_from_thread(
                status.update, f"Training: step {step}/{steps}, loss {loss:.2f}"
            )

        try:
            hf_dir = build_demo(runtime.paths.demo_cache, self.demo_preset, advance)
            self.app.call_from_thread(status.update, "Converting for chat...")
            register_demo(runtime.models, hf_dir)
        except AssistantError as error:
            self.app.call_from_thread(self._failed, error)
            return
        self.app.call_from_thread(self.dismiss, True)

    def _failed(self, error: AssistantError) -> None:
        self.query_one("#demo-status", Static).update(f"Error: {error}\n{error.hint or ''}")
        self.query_one("#build-demo", Button).disabled = False
