"""When may the assistant sleep by itself? Each condition, its value, and whether it holds.

Like Android's JobScheduler (requires charging, requires idle) and Apple's
BGProcessingTask (requires external power): on external power, the person
away, inside the night window, enough to learn, and not already slept tonight
unless new messages came. An unknown power reading blocks (never drain a
battery); an unknown OS idle time falls back on the chat app's own activity,
and says so.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from pathlib import Path

from assistant.config import Config
from assistant.errors import AssistantError
from assistant.sleep.state import SleepLog
from assistant.sleep.trigger import sensors
from assistant.sleep.trigger.sensors import Heartbeat, Reading
from assistant.store.db import Database


@dataclass(frozen=True)
class Condition:
    name: str
    value: str
    holds: bool


@dataclass(frozen=True)
class Readiness:
    """Each condition of an automatic night as it stands now; it may sleep when all hold."""

    conditions: list[Condition]

    @property
    def holds(self) -> bool:
        return all(c.holds for c in self.conditions)

    @property
    def blockers(self) -> list[str]:
        return [c.name for c in self.conditions if not c.holds]

    def describe(self) -> str:
        lines = [f"{'yes' if c.holds else 'NO ':<4}{c.name:<14}{c.value}" for c in self.conditions]
        lines.append(
            "All conditions hold: `sleep auto` would sleep now."
            if self.holds
            else f"Would not sleep now: {', '.join(self.blockers)}."
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "sleep": self.holds,
            "conditions": [vars(c) for c in self.conditions],
        }


@dataclass(frozen=True)
class NightWindow:
    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> NightWindow:
        match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
        if not match or int(match[1]) > 23 or int(match[3]) > 23:
            raise AssistantError(
                f"The night window {text!r} is not HH:MM-HH:MM.",
                hint='Set sleep_window in the config file, e.g. "01:00-06:00".',
            )
        return cls(time(int(match[1]), int(match[2])), time(int(match[3]), int(match[4])))

    def contains(self, moment: time) -> bool:
        if self.start == self.end:
            return True  # the whole day
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # wraps past midnight

    def opened(self, now: datetime) -> datetime:
        """When the window that ``now`` is in (or last was in) opened."""
        start = now.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        return start if start <= now else start - timedelta(days=1)

    def hours(self) -> list[int]:
        """The hours a run every 15 minutes inside the window starts in."""
        hour, hours = self.start.hour, []
        while not hours or hour != self.end.hour:
            hours.append(hour)
            hour = (hour + 1) % 24
        return hours

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass
class Sensors:
    """Where readings come from; tests swap in fabricated sources."""

    power: Callable[[], Reading] = sensors.read_power
    idle: Callable[[], Reading] = sensors.read_idle_seconds
    now: Callable[[], datetime] = field(default=lambda: datetime.now().astimezone())


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def readiness(config: Config, database: Database, data_dir: Path, sensors: Sensors) -> Readiness:
    """The conditions read from the sensors, the clock and the memory waiting, now."""
    now = sensors.now()
    window = NightWindow.parse(config.sleep_window)
    min_idle = config.sleep_min_idle_minutes * 60
    conditions = []

    power = sensors.power()
    power_text = {True: "on external power", False: "on battery", None: "unknown"}[power.value]
    conditions.append(
        Condition("power", f"{power_text} ({power.source}: {power.detail})", power.value is True)
    )

    idle = sensors.idle()
    heartbeat = Heartbeat(data_dir)
    app_idle = heartbeat.seconds_since(now.timestamp())
    app_text = f"chat app {_minutes(app_idle.value)}"
    if heartbeat.is_open(now.timestamp()):
        app_text = f"chat app open, no input for {_minutes(app_idle.value)}"
    if idle.known:
        away = min(idle.value, app_idle.value)
        text = f"{_minutes(idle.value)} ({idle.source}); {app_text}"
    else:
        away = app_idle.value
        text = f"OS idle time unknown ({idle.source}: {idle.detail}); {app_text}"
    conditions.append(Condition("idle", f"{text}; needs {_minutes(min_idle)}", away >= min_idle))

    conditions.append(
        Condition(
            "night window",
            f"{now:%H:%M} local, window {window}",
            window.contains(now.time()),
        )
    )

    pending, oldest = database.execute("SELECT COUNT(*), MIN(created_at) FROM turns").fetchone()
    age_hours = (now - _parse_utc(oldest)).total_seconds() / 3600 if oldest else 0.0
    enough = pending >= config.sleep_min_turns or (
        pending > 0 and age_hours >= config.sleep_max_wait_hours
    )
    conditions.append(
        Condition(
            "pressure",
            f"{pending} messages waiting, oldest {age_hours:.1f} h; needs"
            f" {config.sleep_min_turns}, or any older than {config.sleep_max_wait_hours:g} h",
            enough,
        )
    )

    last = SleepLog.last_slept(database)
    opened = window.opened(now)
    slept_tonight = last is not None and _parse_utc(last) >= opened
    if slept_tonight:
        (newer,) = database.execute(
            "SELECT COUNT(*) FROM turns WHERE created_at > ?", [last]
        ).fetchone()
        conditions.append(
            Condition(
                "rested",
                f"slept tonight at {_parse_utc(last).astimezone(now.tzinfo):%H:%M};"
                f" {newer} new messages since",
                newer > 0,
            )
        )
    else:
        conditions.append(Condition("rested", "not slept since the window opened", True))
    return Readiness(conditions)


BACK_SECONDS = 60.0  # OS idle time below this during a sleep means the person came back


class Watch:
    """Asked by a running automatic sleep between units of work: a reason to stop, or None.

    The chat app's heartbeat is checked on every call (one ``stat``), so opening
    the app wakes the assistant at once; the sensors are read every
    ``sleep_check_seconds`` (30 s by default).
    """

    def __init__(self, config: Config, data_dir: Path, sensors: Sensors) -> None:
        self.interval = config.sleep_check_seconds
        self.window = NightWindow.parse(config.sleep_window)
        self.heartbeat = Heartbeat(data_dir)
        self.sensors = sensors
        self.started = _time.time()
        self.checked = _time.monotonic()

    def __call__(self) -> str | None:
        last_beat = self.heartbeat.last()
        if last_beat is not None and last_beat > self.started:
            return "the chat app was opened"
        if _time.monotonic() - self.checked < self.interval:
            return None
        self.checked = _time.monotonic()
        power = self.sensors.power()
        if power.value is not True:
            return "the power was unplugged" if power.value is False else "power state unknown"
        if not self.window.contains(self.sensors.now().time()):
            return "the night window ended"
        idle = self.sensors.idle()
        if idle.known and idle.value < BACK_SECONDS:
            return "you came back"
        return None


def _minutes(seconds: float) -> str:
    return "not opened yet" if seconds == float("inf") else f"{seconds / 60:.0f} min"
