"""Screens other than the chat: the first-run screen when no model is registered."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown

NO_MODEL_TEXT = """\
# No model yet

The assistant runs a language model on this computer, and none is installed.
Add one from a terminal, then start `assistant` again:

```
assistant model add Qwen/Qwen2.5-0.5B-Instruct --quant q8_0
```

or, for a model already on disk (a Hugging Face directory with `config.json`):

```
assistant model add /path/to/model
```

`assistant model list` shows what is installed; `assistant paths` shows where it is kept.
"""


class NoModelScreen(Screen):
    """Explains how to add a model instead of failing."""

    BINDINGS = [Binding("q", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(), Center():
            yield Markdown(NO_MODEL_TEXT, id="no-model")
        yield Footer()
