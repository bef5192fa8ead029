"""Automatic sleep: sensors on fabricated sources, the policy table, `sleep why`, and the
scheduled job's files for systemd, launchd and Task Scheduler."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.sleep.trigger.policy import NightWindow, Sensors, readiness
from assistant.sleep.trigger.schedule import (
    ScheduledJob,
    launchd_plist,
    systemd_units,
    windows_task_xml,
)
from assistant.sleep.trigger.sensors import Heartbeat, Reading, read_idle_seconds, read_power

# -- power ------------------------------------------------------------------------------


def _supply(root: Path, name: str, **files: str) -> None:
    (root / name).mkdir(parents=True)
    for key, value in files.items():
        (root / name / key).write_text(value + "\n")


@pytest.mark.parametrize(
    ("supplies", "expected"),
    [
        ({"AC": {"type": "Mains", "online": "1"}, "BAT0": {"type": "Battery"}}, True),
        ({"AC": {"type": "Mains", "online": "0"}, "BAT0": {"type": "Battery"}}, False),
        ({"BAT0": {"type": "Battery", "status": "Discharging"}}, False),
        ({"BAT0": {"type": "Battery", "status": "Charging"}}, True),
        ({"BAT0": {"type": "Battery", "status": "Unknown"}}, None),
        ({"BAT0": {"type": "Battery"}}, None),
        ({}, True),  # no battery at all: a desktop on mains
        ({"usb": {"type": "USB", "online": "1"}}, True),
    ],
)
def test_linux_power_from_a_fabricated_sysfs_tree(tmp_path: Path, supplies, expected) -> None:
    root = tmp_path / "power_supply"
    root.mkdir()
    for name, files in supplies.items():
        _supply(root, name, **files)
    reading = read_power("linux", root)
    assert reading.value is expected and reading.source == "sysfs"


def _runner(outputs: dict[str, str | None]):
    return lambda command: outputs.get(command[0])


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Now drawing from 'AC Power'\n -InternalBattery-0 (id=1)\t100%; charged;", True),
        ("Now drawing from 'Battery Power'\n -InternalBattery-0 (id=1)\t80%; discharging;", False),
        ("something else", None),
        (None, None),
    ],
)
def test_macos_power_from_pmset(output, expected) -> None:
    assert read_power("darwin", run=_runner({"pmset": output})).value is expected


# -- idle ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('  |   "HIDIdleTime" = 125000000000\n', 125.0),
        ("no such key", None),
        (None, None),
    ],
)
def test_macos_idle_from_ioreg(output, expected) -> None:
    assert read_idle_seconds("darwin", _runner({"ioreg": output})).value == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("IdleHint=yes\nIdleSinceHint=1000000000000000\n", 600.0),
        ("IdleHint=no\nIdleSinceHint=0\n", 0.0),
        ("IdleHint=yes\nIdleSinceHint=0\n", None),
        (None, None),
    ],
)
def test_linux_idle_from_logind(monkeypatch, output, expected) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)  # no X11: logind is asked
    reading = read_idle_seconds("linux", _runner({"loginctl": output}), now=1_000_000_600.0)
    assert reading.value == expected


def test_the_chat_heartbeat_is_a_file_time(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path)
    assert heartbeat.seconds_since().value == float("inf")
    heartbeat.beat()
    assert heartbeat.seconds_since(heartbeat.last() + 30).value == pytest.approx(30)


# -- policy ----------------------------------------------------------------------------------
TONIGHT = datetime(2026, 11, 22, 2, 30).astimezone()


def _sensors(power=True, idle=3600.0, now=TONIGHT) -> Sensors:
    return Sensors(
        power=lambda: Reading(power, "test", "fabricated"),
        idle=lambda: Reading(idle, "test", "fabricated"),
        now=lambda: now,
    )


def _tell(runtime, count: int) -> None:
    conversation = runtime.memory.new_conversation()
    for i in range(count):
        runtime.memory.append(conversation, "user", f"message {i}")


def _age_turns(runtime, hours: float) -> None:
    when = (TONIGHT - timedelta(hours=hours)).astimezone(timezone.utc).isoformat()
    runtime.database.execute("UPDATE turns SET created_at = ?", [when])


def test_each_condition_false_in_turn_blocks_the_sleep(runtime) -> None:
    _tell(runtime, 12)
    _age_turns(runtime, 3)
    args = (runtime.config, runtime.database, runtime.paths.data_dir)
    assert readiness(*args, _sensors()).holds
    cases = {
        "power": [_sensors(power=False), _sensors(power=None)],
        "idle": [_sensors(idle=60.0)],
        "night window": [_sensors(now=TONIGHT.replace(hour=14))],
    }
    for blocker, sensor_sets in cases.items():
        for sensors in sensor_sets:
            verdict = readiness(*args, sensors)
            assert verdict.blockers == [blocker], verdict.describe()
            assert f"NO  {blocker}" in verdict.describe()

    heartbeat = Heartbeat(runtime.paths.data_dir)
    heartbeat.beat()  # the chat app was used a minute before "now"
    os.utime(heartbeat.path, (TONIGHT.timestamp() - 60,) * 2)
    assert readiness(*args, _sensors()).blockers == ["idle"]


def test_unknown_os_idle_falls_back_on_the_chat_app(runtime) -> None:
    _tell(runtime, 12)
    args = (runtime.config, runtime.database, runtime.paths.data_dir)
    verdict = readiness(*args, _sensors(idle=None))
    assert verdict.holds and "OS idle time unknown" in verdict.describe()


def test_pressure_and_having_slept_tonight(runtime) -> None:
    args = (runtime.config, runtime.database, runtime.paths.data_dir)
    _tell(runtime, 3)
    _age_turns(runtime, 2)
    assert readiness(*args, _sensors()).blockers == ["pressure"]  # 3 < 10, and recent
    _age_turns(runtime, 30)
    assert readiness(*args, _sensors()).holds  # few, but waiting longer than a day

    slept_at = (TONIGHT - timedelta(minutes=30)).astimezone(timezone.utc).isoformat()

    def slept(stage: str, outcome: str) -> None:
        runtime.database.execute(
            "INSERT INTO sleeps (started_at, finished_at, stage, outcome) VALUES (?, ?, ?, ?)",
            [slept_at, slept_at, stage, outcome],
        )

    slept("paused", "interrupted")  # stopped half-way: not a night's sleep, resumed later
    slept("done", "interrupted")
    assert readiness(*args, _sensors()).holds
    slept("done", "kept")
    verdict = readiness(*args, _sensors())
    assert verdict.blockers == ["rested"] and "0 new messages since" in verdict.describe()
    _tell(runtime, 1)  # a new message after that sleep: new pressure
    assert readiness(*args, _sensors()).holds


def test_sleep_why_and_auto_on_the_cli(home: Path) -> None:
    result = CliRunner().invoke(cli, ["sleep", "why", "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    names = [c["name"] for c in verdict["conditions"]]
    assert names == ["power", "idle", "night window", "pressure", "rested"]
    assert verdict["sleep"] is False
    assert not next(c for c in verdict["conditions"] if c["name"] == "pressure")["holds"]

    auto = CliRunner().invoke(cli, ["sleep", "auto"])
    assert auto.exit_code == 0 and auto.output == ""  # quiet; the reason is logged
    logged = (home / "data" / "sleep-auto.log").read_text()
    assert "not sleeping:" in logged and "pressure" in logged


def test_a_malformed_night_window_is_a_clear_error(home: Path) -> None:
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.json").write_text(json.dumps({"sleep_window": "late"}))
    result = CliRunner().invoke(cli, ["sleep", "why"])
    assert result.exit_code == 1 and "not HH:MM-HH:MM" in result.output


# -- the scheduled job ---------------------------------------------------------------------
WINDOW = NightWindow.parse("01:00-06:00")
COMMAND = ["/usr/bin/python3", "-m", "assistant", "sleep", "auto"]


def test_window_hours_wrap_past_midnight() -> None:
    assert WINDOW.hours() == [1, 2, 3, 4, 5]
    late = NightWindow.parse("23:00-02:00")
    assert late.hours() == [23, 0, 1]
    assert late.contains(datetime(2026, 1, 1, 0, 30).time())
    assert not late.contains(datetime(2026, 1, 1, 12, 0).time())


def test_systemd_units_carry_the_conditions_and_pass_systemd_analyze(tmp_path: Path) -> None:
    units = systemd_units(WINDOW, COMMAND, {"ASSISTANT_HOME": "/home/me/assistant data"})
    service, timer = units["assistant-sleep.service"], units["assistant-sleep.timer"]
    assert "ConditionACPower=true" in service and "Type=oneshot" in service
    assert 'Environment="ASSISTANT_HOME=/home/me/assistant data"' in service
    assert "Persistent=true" in timer and "OnCalendar=*-*-* 01,02,03,04,05:00/15:00" in timer
    if shutil.which("systemd-analyze") is None:
        return
    command = [shutil.which("python3") or "/bin/true", "-m", "assistant", "sleep", "auto"]
    for name, text in systemd_units(WINDOW, command, {}).items():
        (tmp_path / name).write_text(text)
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", "*-*-* 01,02,03,04,05:00/15:00"],
        capture_output=True,
        text=True,
    )
    assert calendar.returncode == 0, calendar.stderr
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in units)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr


def test_the_launchd_plist_round_trips() -> None:
    job = plistlib.loads(launchd_plist(WINDOW, COMMAND, {"ASSISTANT_HOME": "/x"}))
    assert job["Label"] == "com.sleeping-assistant.sleep"
    assert job["ProgramArguments"] == COMMAND
    assert job["EnvironmentVariables"] == {"ASSISTANT_HOME": "/x"}
    slots = job["StartCalendarInterval"]
    assert len(slots) == 5 * 4 and slots[0] == {"Hour": 1, "Minute": 0}
    assert slots[-1] == {"Hour": 5, "Minute": 45}


def test_the_task_scheduler_xml_carries_power_and_idle_settings() -> None:
    xml = windows_task_xml(WINDOW, COMMAND, {})
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    task = ElementTree.fromstring(xml.encode("utf-16"))
    settings = task.find("t:Settings", ns)
    for flag in ("DisallowStartIfOnBatteries", "StopIfGoingOnBatteries", "RunOnlyIfIdle"):
        assert settings.find(f"t:{flag}", ns).text == "true"
    trigger = task.find("t:Triggers/t:CalendarTrigger", ns)
    assert trigger.find("t:StartBoundary", ns).text.endswith("T01:00:00")
    assert trigger.find("t:Repetition/t:Interval", ns).text == "PT15M"
    assert trigger.find("t:Repetition/t:Duration", ns).text == "PT5H"
    assert task.find("t:Actions/t:Exec/t:Command", ns).text == COMMAND[0]


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_install_is_idempotent_and_remove_leaves_no_file(tmp_path: Path, platform: str) -> None:
    ran: list[list[str]] = []

    def run(command):
        ran.append(list(command))
        return ""

    scheduler = ScheduledJob(platform, tmp_path, run)
    scheduler.install(WINDOW)
    first = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    scheduler.install(WINDOW)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == first
    assert len(first) == (2 if platform == "linux" else 1)
    assert any("installed" in line for line in scheduler.show(WINDOW))
    assert ran  # the OS tool was asked to register the job
    scheduler.remove(WINDOW)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert scheduler.show(WINDOW)[0].startswith("not installed")


def test_a_running_sleep_is_told_why_to_stop(runtime) -> None:
    from assistant.sleep.trigger.policy import Watch

    every_call = replace(runtime.config, sleep_check_seconds=0)

    def watch(**readings) -> str | None:
        return Watch(every_call, runtime.paths.data_dir, _sensors(**readings))()

    assert watch() is None
    assert watch(power=False) == "the power was unplugged"
    assert watch(power=None) == "power state unknown"
    assert watch(now=TONIGHT.replace(hour=7)) == "the night window ended"
    assert watch(idle=5.0) == "you came back"
    running = Watch(runtime.config, runtime.paths.data_dir, _sensors())
    Heartbeat(runtime.paths.data_dir).beat()
    os.utime(Heartbeat(runtime.paths.data_dir).path, (running.started + 1,) * 2)
    assert running() == "the chat app was opened"  # at once, not after the 30 s interval


# -- a memory locked with a passphrase ------------------------------------------------------
def test_a_passphrase_memory_sleeps_through_the_app_not_the_scheduled_job(
    model_home: Path, monkeypatch
) -> None:
    from assistant.runtime import Runtime
    from assistant.sleep.trigger.auto import LOG_FILE, sleep_if_due, sleep_through_app

    app = Runtime()  # the open app, unlocked with the passphrase
    conversation = app.memory.new_conversation()
    for i in range(12):
        app.memory.append(conversation, "user", f"message {i}")
    monkeypatch.delenv("ASSISTANT_PASSPHRASE")  # the scheduled job has no passphrase

    line = sleep_if_due(Runtime(), _sensors())
    assert line.startswith("not sleeping: the memory is locked with a passphrase")
    assert "leave `assistant` open and unlocked overnight" in line
    log = model_home / "data" / LOG_FILE
    assert log.read_text().splitlines()[-1].endswith(line)
    why = CliRunner().invoke(cli, ["sleep", "why"])
    assert "How this machine sleeps: the memory is locked with a passphrase" in why.output

    # The app hands its key to the night: it unlocks, sleeps (small talk: nothing to learn)
    # and shreds the day.
    night = sleep_if_due(Runtime(handed_key=app.master_key), _sensors())
    assert night.startswith("sleep 1: nothing new"), night
    assert app.memory.count() == 0

    # The app's way in, as a real subprocess: the key goes over a pipe; the child checks it
    # first, then judges the conditions with this machine's own sensors.
    time.sleep(1.1)  # new messages, stamped after that night (times have whole seconds)
    conversation = app.memory.new_conversation()
    for i in range(12):
        app.memory.append(conversation, "user", f"more {i}")
    process = sleep_through_app(app, _sensors())
    assert process is not None and process.wait(timeout=120) == 0
    assert "locked with a passphrase" not in log.read_text().splitlines()[-1]
    wrong = subprocess.run(
        [sys.executable, "-m", "assistant", "sleep", "auto", "--key-on-stdin"],
        input=(bytes(32).hex() + "\n"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 1 and "does not open the memory" in wrong.stderr
    assert "reopen the app" in log.read_text().splitlines()[-1]
    app.database.close()


# -- no training backend (an Intel Mac, or one removed by hand) ------------------------------
def _no_training_backend(monkeypatch, *installed: str) -> None:
    """Only ``installed`` backends are found (none: as on an Intel Mac)."""
    monkeypatch.setattr("assistant.backends.choice.installed", lambda name: name in installed)


def test_with_no_backend_the_scheduled_job_logs_why_and_starts_nothing(
    runtime, monkeypatch
) -> None:
    from assistant.sleep.trigger.auto import LOG_FILE, sleep_if_due

    _tell(runtime, 12)
    _age_turns(runtime, 3)
    _no_training_backend(monkeypatch)
    line = sleep_if_due(runtime, _sensors())
    assert line.startswith(
        "not sleeping: No training backend is installed, so the assistant cannot sleep. ("
    ), line
    logged = (runtime.paths.data_dir / LOG_FILE).read_text().splitlines()
    assert logged[-1].endswith(line) and not any(entry.endswith(" sleeping") for entry in logged)
    # No night began: nothing sealed off, nothing to redo, the day's messages kept.
    assert runtime.database.execute("SELECT count(*) FROM sleeps").fetchone() == (0,)
    assert runtime.memory.count() == 12


def test_with_no_backend_the_app_starts_no_child_and_logs_why_each_time(
    runtime, monkeypatch
) -> None:
    from types import SimpleNamespace

    from assistant.sleep.trigger import auto

    started: list[list[str]] = []

    def popen(command, **_):
        started.append(command)
        return SimpleNamespace(stdin=SimpleNamespace(write=lambda _: None, close=lambda: None))

    # Only this module's subprocess is faked: nothing else in the process sees it.
    monkeypatch.setattr(
        auto, "subprocess", SimpleNamespace(Popen=popen, PIPE=subprocess.PIPE, DEVNULL=None)
    )
    _tell(runtime, 12)  # a passphrase memory (the fixture's): the app's way in
    _age_turns(runtime, 3)
    log = runtime.paths.data_dir / auto.LOG_FILE
    _no_training_backend(monkeypatch)
    for calls in (1, 2):  # the app asks every few minutes: one line each time
        assert auto.sleep_through_app(runtime, _sensors()) is None
        lines = log.read_text().splitlines()
        assert len(lines) == calls
        assert "not sleeping: No training backend is installed" in lines[-1]
    assert started == []
    _no_training_backend(monkeypatch, "torch")  # with one: the child is started
    assert auto.sleep_through_app(runtime, _sensors()) is not None
    assert started and started[0][-2:] == ["auto", auto.KEY_ON_STDIN]
    assert len(log.read_text().splitlines()) == 2
