"""What a night did, for the user: learned or kept, why, how long, how well it recalls.

The report is derived from private memories ("what I learned" quotes the
verified probe questions), so it is stored sealed under the master key and
shown only to the user; it never goes to a log.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# How a sleep ended.
CONSOLIDATED = "consolidated"  # expert committed, raw turns shredded
KEPT = "kept"  # verification failed or nothing to learn: every turn kept for the next night
NOTHING_TO_DO = "nothing to do"
INTERRUPTED = "interrupted"  # stopped when its conditions ended: every turn kept, redone next time


@dataclass
class SleepReport:
    sleep_id: int
    outcome: str = ""
    reason: str = ""
    turns: int = 0
    epochs: list[int] = field(default_factory=list)
    expert_id: int | None = None
    learned: list[str] = field(default_factory=list)
    # Counts only: how many notes and probes the night worked with.
    notes: int = 0
    lessons: int = 0
    held_out: int = 0
    checked: int = 0  # held-out questions whose in-context answer differs from before sleep
    # Verification: share of held-out probes answered closed-book as the teacher did in context.
    recall: float | None = None
    retention: float | None = None
    anchor_divergence: float | None = None
    train_steps: int = 0
    train_tokens: int = 0
    final_loss: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    resumable: bool = False  # interrupted with a checkpoint the next run goes on from

    @property
    def seconds(self) -> float:
        return round(sum(self.stage_seconds.values()), 2)

    def to_dict(self) -> dict:
        return {**asdict(self), "seconds": self.seconds}

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SleepReport:
        return cls(**json.loads(data))

    def summary(self) -> str:
        """A few lines for the terminal and the chat app."""
        minutes = self.seconds / 60
        if self.outcome == NOTHING_TO_DO:
            return "Nothing new to learn: no conversations since the last sleep."
        if self.outcome == INTERRUPTED:
            then = (
                "I will pick up where I stopped"
                if self.resumable
                else "they wait for the next sleep"
            )
            return (
                f"I stopped sleeping after {minutes:.1f} min ({self.reason}); your"
                f" {self.turns} messages are safe and {then}."
            )
        if self.outcome == KEPT:
            return (
                f"I slept {minutes:.1f} min but kept your {self.turns} messages for next time:"
                f" {self.reason}"
            )
        lines = [
            f"I learned from {self.turns} messages in {minutes:.1f} min and deleted the logs.",
            f"Recall check without the logs: {_percent(self.recall)}"
            + (
                f"; older memories kept: {_percent(self.retention)}"
                if self.retention is not None
                else ""
            ),
        ]
        if self.learned:
            lines.append("What I learned, e.g.: " + "; ".join(self.learned[:5]))
        return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"
