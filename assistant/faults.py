"""Test-only fault injection for crash-safety tests.

``ASSISTANT_CRASH_AT=<point>`` SIGKILLs the process when it reaches that named
point, so a test kills it at an exact step instead of racing a timer.
``ASSISTANT_UNLEARNABLE=<text>`` makes a night judge every note containing the
text not learned, as a note the model cannot learn would be.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "ASSISTANT_CRASH_AT"
UNLEARNABLE_ENV = "ASSISTANT_UNLEARNABLE"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def unlearnable(note: str) -> bool:
    marker = os.environ.get(UNLEARNABLE_ENV)
    return bool(marker) and marker in note
