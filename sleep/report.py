"""What a night did, for the user: learned or kept, why, how long, how well it recalls.

The report is derived from private memories ("what I learned" quotes the
verified probe questions), so it is stored sealed under the master key and
shown only to the user; it never goes to a log.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

# How a sleep ended.
CONSOLIDATED = "consolidated"  # expert committed, its notes' turns shredded, the rest carried
KEPT = "kept"  # verification failed or nothing to learn: every turn kept for the next night
NOTHING_TO_DO = "nothing to do"
NOTHING_NEW = "nothing new"  # conversations with nothing to learn (small talk): no expert, shredded
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
    model: str = ""  # the base model the night learns on, from its start to its commit
    backend: str = ""  # the training backend and device, e.g. "torch/cpu"
    # Counts only: how many notes, probes and other questions the night worked with.
    notes: int = 0
    probes: int = 0
    held_out: int = 0
    negatives: int = 0
    anchors: int = 0
    changed: int = 0  # earlier facts today's notes changed (the newest value wins)
    # Verification, closed-book with the candidate expert: share of held-out probes naming
    # their value; of never-told questions naming a value learned tonight; of earlier probes
    # still naming theirs; and how far the anchors moved.
    recall: float | None = None
    leak: float | None = None
    retention: float | None = None
    anchor_divergence: float | None = None
    # Per note trained on: [held-out probes answered right, held-out probes] (no text).
    note_recall: list[list[int]] = field(default_factory=list)
    # The committed expert's notes, and those not learned: their turns (``carried``, by id)
    # wait in the open epoch for the next night; ``notes_overdue`` of them have waited
    # ``sleep_max_tries`` nights.
    notes_learned: int = 0
    notes_waiting: int = 0
    notes_overdue: int = 0
    carried: list[int] = field(default_factory=list)
    # Each held-out check during training: {"step", "recall", "anchor_drift"}.
    checks: list[dict] = field(default_factory=list)
    train_steps: int = 0
    train_tokens: int = 0
    final_loss: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    resumable: bool = False  # interrupted with a checkpoint the next run goes on from

    @property
    def seconds(self) -> float:
        return round(sum(self.stage_seconds.values()), 2)

    @property
    def notes_committed(self) -> float | None:
        """The share of the notes trained on that the committed expert holds."""
        if not self.note_recall:
            return None
        learned = self.notes_learned if self.outcome == CONSOLIDATED else 0
        return round(learned / len(self.note_recall), 4)

    def to_dict(self) -> dict:
        return {**asdict(self), "seconds": self.seconds, "notes_committed": self.notes_committed}

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SleepReport:
        """A stored report; fields an older version wrote and this one dropped are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(data).items() if k in known})

    def summary(self) -> str:
        """A few lines for the terminal and the chat app."""
        minutes = self.seconds / 60
        if self.outcome == NOTHING_TO_DO:
            return "Nothing new to learn: no conversations since the last sleep."
        if self.outcome == NOTHING_NEW:
            return (
                f"Your {self.turns} messages held nothing that needed learning (no fact to"
                " remember), so I deleted them without making a new expert."
            )
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
        things = self.notes_learned + self.notes_waiting
        if things:
            learned = (
                f"I learned {self.notes_learned} of {things} things from your {self.turns}"
                f" messages in {minutes:.1f} min and deleted their logs."
            )
        else:  # a night from before notes were judged one by one
            learned = (
                f"I learned from {self.turns} messages in {minutes:.1f} min and deleted the logs."
            )
        if self.notes_waiting:
            learned += f" Still learning {self.notes_waiting} (kept encrypted for the next night)."
        if self.notes_overdue:
            learned += (
                f" {self.notes_overdue} of them not yet learned after many nights: kept, never"
                " dropped."
            )
        lines = [
            learned,
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
