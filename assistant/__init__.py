"""An on-device personal assistant that learns while it sleeps.

The top-level package holds what the assistant does while awake: paths and
config, the encrypted memory store, the model registry and GGUF conversion,
and the chat engine. Sleep, training backends, kernels and the terminal UI
live in the subpackages ``assistant.sleep``, ``assistant.backends``,
``assistant.kernels`` and ``assistant.tui``.
"""

__version__ = "0.1.0"
