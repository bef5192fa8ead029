"""`assistant sleep auto`: what the scheduled job runs every quarter hour of the night, and
how a memory locked with a passphrase sleeps at all.

A passphrase is never stored, so the scheduled job cannot unlock such a memory. There
the open, unlocked chat app runs the night instead: when every condition holds it starts
``sleep auto`` in a subprocess and hands it the key over a pipe (never a file, never the
environment). ``how_this_machine_sleeps`` says which way applies, for `sleep why` and
`doctor`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime

from assistant.errors import AssistantError
from assistant.runtime import Runtime
from assistant.sleep.trigger.policy import Sensors, Watch, readiness

LOG_FILE = "sleep-auto.log"
KEY_ON_STDIN = "--key-on-stdin"  # `sleep auto` reads the master key (hex) from its stdin
PASSPHRASE_ONLY = (
    "the memory is locked with a passphrase, which is never stored, so the scheduled job"
    " cannot unlock it; the open chat app sleeps for you: leave `assistant` open and"
    " unlocked overnight (or run `assistant sleep --now`)"
)


def how_this_machine_sleeps(runtime: Runtime) -> str:
    """One line: who can start a night here, and what the person must do for it."""
    from assistant.store.keys import current_source, unattended

    source = current_source(runtime.database)
    if source is None:
        return "no memory key yet: sleep can start once you have chatted"
    if unattended(runtime.database):
        return (
            f"the scheduled job unlocks the memory itself ({source}); install it with"
            " `assistant sleep schedule install` if `sleep schedule show` says it is missing"
        )
    return PASSPHRASE_ONLY


def sleep_if_due(
    runtime: Runtime, sensors: Sensors, progress: Callable[[str], None] = lambda _: None
) -> str:
    """Sleep (or resume a paused sleep) if every condition holds, stopping when one ends.

    Returns the line it appends to ``sleep-auto.log`` in the data directory: conditions,
    outcomes and counts only, never what was said.
    """
    from assistant.sleep.options import SleepOptions, stop_on_signals
    from assistant.sleep.runner import SleepRunner
    from assistant.store.keys import PASSPHRASE_ENV, unattended
    from assistant.store.lock import StoreBusyError

    ready = readiness(runtime.config, runtime.database, runtime.paths.data_dir, sensors)
    if not ready.holds:
        return log(runtime, f"not sleeping: {', '.join(ready.blockers)}")
    can_unlock = runtime.handed_key is not None or os.environ.get(PASSPHRASE_ENV)
    if not (can_unlock or unattended(runtime.database)):
        return log(runtime, f"not sleeping: {how_this_machine_sleeps(runtime)}")
    missing = _no_backend(runtime)
    if missing:
        return log(runtime, missing)
    log(runtime, "sleeping")
    watch = Watch(runtime.config, runtime.paths.data_dir, sensors)
    try:
        with stop_on_signals(progress) as signalled:
            options = SleepOptions(should_stop=lambda: signalled() or watch())
            report = SleepRunner(runtime, options, progress).run()
    except StoreBusyError as busy:
        return log(runtime, f"not sleeping: {busy.holder} is running")
    return log(
        runtime,
        f"sleep {report.sleep_id}: {report.outcome}"
        + (f" ({report.reason})" if report.reason else ""),
    )


def sleep_through_app(runtime: Runtime, sensors: Sensors) -> subprocess.Popen | None:
    """What the open, unlocked app does for a memory the scheduled job cannot unlock: start
    `sleep auto` in a subprocess when every condition holds, the key handed over a pipe.
    Returns the process, or None when there is nothing to start (or nothing to train with:
    then it logs why, as ``sleep_if_due`` would, rather than start a child that only says so).
    """
    from assistant.store import lock
    from assistant.store.keys import unattended

    if unattended(runtime.database) or lock.holder(runtime.paths.writer_lock):
        return None
    if not readiness(runtime.config, runtime.database, runtime.paths.data_dir, sensors).holds:
        return None
    missing = _no_backend(runtime)
    if missing:
        log(runtime, missing)
        return None
    process = subprocess.Popen(
        [sys.executable, "-m", "assistant", "sleep", "auto", KEY_ON_STDIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # what happened goes to sleep-auto.log
    )
    assert process.stdin is not None
    process.stdin.write(runtime.master_key.hex().encode() + b"\n")
    process.stdin.close()
    return process


def _no_backend(runtime: Runtime) -> str | None:
    """The "not sleeping" line when the config's ``sleep_backend`` resolves to no installed
    training backend (an Intel Mac, or one removed by hand); None when one is there. Only
    the import system is asked (``backends.choice``): nothing is imported."""
    from assistant.backends import choice

    try:
        choice.resolve(runtime.config.sleep_backend)
    except AssistantError as err:
        return f"not sleeping: {err} ({err.hint})"
    return None


def log(runtime: Runtime, line: str) -> str:
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    with (runtime.paths.data_dir / LOG_FILE).open("a") as handle:
        handle.write(f"{stamp} {line}\n")
    return line
