"""User settings, a small JSON file in the config directory; missing keys take defaults."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from assistant.errors import AssistantError


@dataclass(frozen=True)
class Config:
    n_ctx: int = 2048
    max_reply_tokens: int = 256
    temperature: float = 0.0
    threads: int | None = None
    # Sleep (assistant.sleep): how long a night may take, how hard it trains, what it must pass.
    sleep_budget_minutes: float = 30.0  # the whole night: probes, anchors, training, checks
    sleep_steps: int = 300  # at most; training stops earlier once the held-out probes are learned
    sleep_learning_rate: float = 1e-3
    sleep_rank: int = 16
    sleep_backend: str = "auto"  # auto|torch|mlx: auto is MLX on Apple silicon, torch elsewhere
    sleep_kernels: str = "auto"  # auto|on|off: our fused kernels; auto: on with CUDA
    sleep_max_answer_tokens: int = 48
    sleep_questions_per_note: int = 12  # probes written per note, a share of them held out
    sleep_anchors: int = 64  # shipped general prompts per night (plus earlier nights' probes)
    sleep_negatives: int = 64  # questions about things never told, a quarter held out
    sleep_evaluate_every: int = 20  # steps between held-out checks (and on-policy samples)
    sleep_stop_recall: float = 0.95  # held-out recall at which training stops
    sleep_patience: int = 2  # checks without a better held-out recall before it stops; 0: none
    sleep_min_recall: float = 0.8  # share of a note's held-out probes right: it is learned
    sleep_min_retention: float = 0.9
    sleep_max_leak: float = 0.1
    sleep_max_anchor_divergence: float = 0.1
    sleep_max_tries: int = 5  # nights a note not yet learned waits before it is reported
    sleep_checkpoint_minutes: float = 5.0  # a night killed outright loses at most this much
    # Automatic sleep (assistant.sleep.trigger.policy): when `sleep auto` may start on its own.
    sleep_window: str = "01:00-06:00"  # local time; may wrap past midnight
    sleep_min_idle_minutes: float = 15.0
    sleep_min_turns: int = 10  # enough messages waiting...
    sleep_max_wait_hours: float = 24.0  # ...or any message waiting this long
    sleep_check_seconds: float = 30.0  # how often a running one re-reads power, window, idle

    @classmethod
    def load(cls, path: Path) -> Config:
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise AssistantError(f"The config file {path} is not valid JSON ({err}).") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AssistantError(
                f"Unknown setting(s) in {path}: {', '.join(unknown)}.",
                hint=f"Known settings: {', '.join(sorted(known))}.",
            )
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)
