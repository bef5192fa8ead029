"""Test-only fault injection for crash-safety tests.

``ASSISTANT_CRASH_AT=<point>`` SIGKILLs the process when it reaches that named
point, so a test kills it at an exact step instead of racing a timer.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "ASSISTANT_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
