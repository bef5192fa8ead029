"""What `assistant sleep status` and the chat app show: the last report and what waits."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.runtime import Runtime
from assistant.sleep.report import INTERRUPTED, SleepReport
from assistant.sleep.state import SleepLog, SleepRow


@dataclass(frozen=True)
class SleepStatus:
    pending_turns: int
    last: SleepReport | None
    last_finished_at: str | None
    interrupted: bool  # a sleep was stopped mid-way; the next one finishes, resumes or redoes it

    def to_dict(self) -> dict:
        return {
            "pending_turns": self.pending_turns,
            "interrupted": self.interrupted,
            "last_finished_at": self.last_finished_at,
            "last": self.last.to_dict() if self.last else None,
        }

    def describe(self) -> str:
        lines = [f"Messages waiting for the next sleep: {self.pending_turns}."]
        last = self.last
        if self.interrupted:
            line = "A sleep was interrupted; the next one will finish or resume it."
            if last and last.outcome == INTERRUPTED and last.resumable and last.backend:
                # Its checkpoint holds that backend's training state: another restarts it.
                backend = last.backend.split("/")[0]
                line = line[:-1] + f" (under {backend}; another backend restarts its training)."
            lines.append(line)
        if last is None:
            lines.append("No sleep yet. Run `assistant sleep --now` to consolidate now.")
        else:
            backend = f" (backend {last.backend})" if last.backend else ""
            lines.append(f"Last sleep ({self.last_finished_at}): {last.outcome}{backend}.")
            lines.append(last.summary())
        return "\n".join(lines)


SHOWN_META_KEY = "sleep_report_shown"


def _last_report(runtime: Runtime) -> tuple[SleepRow | None, SleepReport | None]:
    log = SleepLog(runtime.database, runtime.memory)
    row = log.last_finished()
    return row, (log.report(row) if row else None)


def unseen_report(runtime: Runtime) -> SleepReport | None:
    """The last night's report if the chat app has not shown it yet (then marked shown)."""
    row, report = _last_report(runtime)
    # A paused night ends twice (paused, then done): each ending is shown once.
    ending = f"{row.id}@{row.finished_at}" if row else ""
    if report is None or runtime.database.get_meta(SHOWN_META_KEY) == ending:
        return None
    runtime.database.set_meta(SHOWN_META_KEY, ending)
    return report


def sleep_status(runtime: Runtime) -> SleepStatus:
    log = SleepLog(runtime.database, runtime.memory)
    row, last = _last_report(runtime)
    return SleepStatus(
        pending_turns=runtime.memory.count(),
        last=last,
        last_finished_at=row.finished_at if row else None,
        interrupted=bool(log.unfinished()),
    )
