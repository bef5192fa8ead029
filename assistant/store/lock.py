"""The writer lock: one process at a time changes what a night depends on.

A sleep, a key rotation, a model switch or removal, an adapter reset or import,
and the sealing of an older store's records each hold it for as long as they
change things (take it with ``Runtime.exclusive``). It is an OS file lock, so the
kernel releases it when its process dies and it never goes stale. Its holder
writes what it is doing in a file beside it (a few words such as "a sleep",
never memory), so whoever is turned away is told what holds it.
"""

from __future__ import annotations

from pathlib import Path

from assistant.errors import AssistantError

SLEEP = "a sleep"  # what a night says it is doing


class StoreBusyError(AssistantError):
    hint = "Wait for it to finish (see `assistant sleep status`), then run it again if needed."

    def __init__(self, holder: str, doing: str) -> None:
        self.holder = holder
        if holder == doing:
            message = f"Another {holder.split(' ', 1)[-1]} is already running for this memory."
        else:
            message = f"{holder[:1].upper()}{holder[1:]} is running, so {doing} has to wait."
        super().__init__(message)


class WriterLock:
    """Held while ``doing`` (a phrase with its article: "an adapter reset") changes the store."""

    def __init__(self, path: Path, doing: str) -> None:
        from filelock import FileLock

        self.path = path
        self.doing = doing
        self._lock = FileLock(path, mode=0o600)

    def __enter__(self) -> WriterLock:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StoreBusyError(_said_by_holder(self.path), self.doing) from None
        said = _holder_file(self.path)
        said.write_text(self.doing, encoding="utf-8")
        said.chmod(0o600)
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def holder(path: Path) -> str | None:
    """What holds the lock right now ("a sleep", "an adapter import"...), None if nothing."""
    from filelock import FileLock, Timeout

    lock = FileLock(path, mode=0o600)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return _said_by_holder(path)
    lock.release()
    return None


def sleeping(path: Path) -> bool:
    """Whether a night holds the lock now (not a reset, an import or a key rotation)."""
    return holder(path) == SLEEP


def _holder_file(path: Path) -> Path:
    return path.with_name(path.name + ".holder")


def _said_by_holder(path: Path) -> str:
    """What the process holding the lock said it does (a version before that file: a sleep)."""
    try:
        return _holder_file(path).read_text(encoding="utf-8").strip() or SLEEP
    except OSError:
        return SLEEP
