"""What `assistant sleep status` and the chat app show: the last report and what waits."""

from __future__ import annotations

from dataclasses import dataclass

from assistant.runtime import Runtime
from assistant.sleep.report import SleepReport
from assistant.sleep.state import SleepLog


@dataclass(frozen=True)
class SleepStatus:
    pending_turns: int
    last: SleepReport | None
    last_finished_at: str | None
    interrupted: bool  # a sleep was killed mid-way; the next one finishes or restarts it

    def to_dict(self) -> dict:
        return {
            "pending_turns": self.pending_turns,
            "interrupted": self.interrupted,
            "last_finished_at": self.last_finished_at,
            "last": self.last.to_dict() if self.last else None,
        }

    def describe(self) -> str:
        lines = [f"Messages waiting for the next sleep: {self.pending_turns}."]
        if self.interrupted:
            lines.append("A sleep was interrupted; the next one will finish or redo it.")
        if self.last is None:
            lines.append("No sleep yet. Run `assistant sleep --now` to consolidate now.")
        else:
            lines.append(f"Last sleep ({self.last_finished_at}): {self.last.outcome}.")
            lines.append(self.last.summary())
        return "\n".join(lines)


def sleep_status(runtime: Runtime) -> SleepStatus:
    log = SleepLog(runtime.database)
    row = log.last_finished()
    last = None
    if row is not None and row.report is not None:
        sealed = runtime.memory.unseal(f"sleep-report:{row.id}", row.report)
        last = SleepReport.from_json(sealed)
    return SleepStatus(
        pending_turns=runtime.memory.count(),
        last=last,
        last_finished_at=row.finished_at if row else None,
        interrupted=bool(log.unfinished()),
    )
