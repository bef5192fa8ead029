"""`assistant sleep auto`: what the scheduled job runs every quarter hour of the night."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from assistant.runtime import Runtime
from assistant.sleep.policy import Sensors, Watch, evaluate

LOG_FILE = "sleep-auto.log"


def sleep_if_due(
    runtime: Runtime, sensors: Sensors, progress: Callable[[str], None] = lambda _: None
) -> str:
    """Sleep (or resume a paused sleep) if every condition holds, stopping when one ends.

    Returns the line it appends to ``sleep-auto.log`` in the data directory: conditions,
    outcomes and counts only, never what was said.
    """
    from assistant.sleep.options import SleepOptions, stop_on_signals
    from assistant.sleep.runner import SleepRunner
    from assistant.sleep.state import SleepBusyError

    verdict = evaluate(runtime.config, runtime.database, runtime.paths.data_dir, sensors)
    if not verdict.holds:
        return _log(runtime, f"not sleeping: {', '.join(verdict.blockers)}")
    _log(runtime, "sleeping")
    watch = Watch(runtime.config, runtime.paths.data_dir, sensors)
    try:
        with stop_on_signals(progress) as signalled:
            options = SleepOptions(should_stop=lambda: signalled() or watch())
            report = SleepRunner(runtime, options, progress).run()
    except SleepBusyError:
        return _log(runtime, "not sleeping: another sleep is running")
    return _log(
        runtime,
        f"sleep {report.sleep_id}: {report.outcome}"
        + (f" ({report.reason})" if report.reason else ""),
    )


def _log(runtime: Runtime, line: str) -> str:
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    with (runtime.paths.data_dir / LOG_FILE).open("a") as handle:
        handle.write(f"{stamp} {line}\n")
    return line
