"""What a night is asked to do and when it must stop: its options, the signal that pauses it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class SleepInterrupted(Exception):
    """Raised inside the night when its conditions end; ``str()`` is the reason."""


SIGNAL_REASONS = {
    signal.SIGINT: "you pressed Ctrl-C",
    signal.SIGTERM: "the system asked it to stop",
}


@contextmanager
def stop_on_signals(notice: Callable[[str], None]) -> Iterator[Callable[[], str | None]]:
    """Ctrl-C or SIGTERM (a scheduler or logout stopping the job) pauses the night at its
    next check instead of killing it mid-step; a second Ctrl-C stops at once. Yields a
    ``should_stop``. Outside the main thread, where Python cannot take signals, it never
    asks to stop."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handle(signum: int, frame: object) -> None:
        if received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(SIGNAL_REASONS[signum])
        notice("pausing at the next step; the next sleep resumes from there")

    previous = {signum: signal.signal(signum, handle) for signum in SIGNAL_REASONS}
    try:
        yield lambda: received[0] if received else None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass(frozen=True)
class SleepOptions:
    budget_minutes: float | None = None  # None: the config's
    backend: str | None = None  # auto|torch|mlx; None: the config's sleep_backend
    device: str = "auto"
    seed: int = 0
    # Asked between units of work; a reason (str) stops the night, None goes on.
    should_stop: Callable[[], str | None] = lambda: None
