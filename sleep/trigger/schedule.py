"""The per-user job that runs `assistant sleep auto` every 15 minutes of the night window.

- Linux: a systemd user service + timer (``ConditionACPower=true``, ``Persistent=true``);
- macOS: a launchd agent (``StartCalendarInterval``);
- Windows: a Task Scheduler task (on AC power only, stopped on battery, run only if idle).

The job only asks; ``sleep auto`` decides (``assistant.sleep.trigger.policy``).
Install is idempotent and remove leaves no file behind.
"""

from __future__ import annotations

import os
import plistlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from assistant.sleep.trigger.policy import NightWindow
from assistant.sleep.trigger.sensors import CommandRunner, run_command

JOB = "assistant-sleep"
LAUNCHD_LABEL = "com.sleeping-assistant.sleep"
MINUTES = (0, 15, 30, 45)


def job_command() -> list[str]:
    return [sys.executable, "-m", "assistant", "sleep", "auto"]


def job_environment() -> dict[str, str]:
    """What the job needs from this shell to find the same memory."""
    return {k: os.environ[k] for k in ("ASSISTANT_HOME",) if os.environ.get(k)}


# -- the files ---------------------------------------------------------------------------
def _systemd_quote(word: str) -> str:
    return f'"{word}"' if any(c in word for c in ' "\\') else word


def systemd_units(window: NightWindow, command: Sequence[str], env: dict[str, str]) -> dict:
    environment = "".join(f'Environment="{k}={v}"\n' for k, v in env.items())
    hours = ",".join(f"{h:02d}" for h in window.hours())
    service = (
        "[Unit]\n"
        "Description=assistant: learn from the day's conversations while charging\n"
        "ConditionACPower=true\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={' '.join(_systemd_quote(w) for w in command)}\n"
        f"{environment}"
        "Nice=19\n"
        "IOSchedulingClass=idle\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=assistant: ask every 15 minutes of the night ({window}) whether to sleep\n\n"
        "[Timer]\n"
        f"OnCalendar=*-*-* {hours}:00/15:00\n"
        "Persistent=true\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{JOB}.service": service, f"{JOB}.timer": timer}


def launchd_plist(window: NightWindow, command: Sequence[str], env: dict[str, str]) -> bytes:
    job = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(command),
        "StartCalendarInterval": [
            {"Hour": hour, "Minute": minute} for hour in window.hours() for minute in MINUTES
        ],
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "Nice": 10,
    }
    if env:
        job["EnvironmentVariables"] = env
    return plistlib.dumps(job)


def windows_task_xml(window: NightWindow, command: Sequence[str], env: dict[str, str]) -> str:
    """Task Scheduler XML: daily at the window's start, repeated every 15 minutes through it.

    Task Scheduler cannot set environment variables, so ASSISTANT_HOME (if any)
    goes through ``cmd /c set ... &&``.
    """
    hours = len(window.hours())
    program, arguments = command[0], " ".join(f'"{w}"' for w in command[1:])
    if env:
        sets = " && ".join(f'set "{k}={v}"' for k, v in env.items())
        program, arguments = "cmd.exe", f'/c {sets} && "{command[0]}" {arguments}'
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>assistant: learn from the day's conversations while charging</Description>
  </RegistrationInfo>
  <Triggers>
    <CalendarTrigger>
      <StartBoundary>2026-01-01T{window.start:%H:%M}:00</StartBoundary>
      <Repetition><Interval>PT15M</Interval><Duration>PT{hours}H</Duration></Repetition>
      <ScheduleByDay><DaysInterval>1</DaysInterval></ScheduleByDay>
    </CalendarTrigger>
  </Triggers>
  <Settings>
    <DisallowStartIfOnBatteries>true</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>true</StopIfGoingOnBatteries>
    <RunOnlyIfIdle>true</RunOnlyIfIdle>
    <IdleSettings>
      <Duration>PT15M</Duration><WaitTimeout>PT1H</WaitTimeout>
      <StopOnIdleEnd>true</StopOnIdleEnd><RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <StartWhenAvailable>true</StartWhenAvailable>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <Priority>7</Priority>
  </Settings>
  <Actions Context="Author">
    <Exec><Command>{escape(program)}</Command><Arguments>{escape(arguments)}</Arguments></Exec>
  </Actions>
</Task>
"""


# -- install, remove, show ---------------------------------------------------------------
@dataclass
class ScheduledJob:
    """The job on one OS: where its files go and the commands that (un)register them."""

    platform: str = sys.platform
    home: Path = Path.home()
    run: CommandRunner = run_command

    def _dir(self) -> Path:
        if self.platform == "darwin":
            return self.home / "Library" / "LaunchAgents"
        if self.platform == "win32":
            return self.home / "AppData" / "Roaming" / "assistant"
        config_home = os.environ.get("XDG_CONFIG_HOME") if self.home == Path.home() else None
        return Path(config_home or self.home / ".config") / "systemd" / "user"

    def files(self, window: NightWindow) -> dict[Path, bytes]:
        command, env, where = job_command(), job_environment(), self._dir()
        if self.platform == "darwin":
            return {where / f"{LAUNCHD_LABEL}.plist": launchd_plist(window, command, env)}
        if self.platform == "win32":
            xml = windows_task_xml(window, command, env).encode("utf-16")
            return {where / f"{JOB}-task.xml": xml}
        units = systemd_units(window, command, env)
        return {where / name: text.encode() for name, text in units.items()}

    def _commands(self, action: str, files: list[Path]) -> list[list[str]]:
        uid = str(os.getuid()) if hasattr(os, "getuid") else ""
        if self.platform == "darwin":
            plist = str(files[0])
            return {
                "install": [
                    ["launchctl", "bootout", f"gui/{uid}", plist],
                    ["launchctl", "bootstrap", f"gui/{uid}", plist],
                ],
                "remove": [["launchctl", "bootout", f"gui/{uid}", plist]],
                "show": [["launchctl", "print", f"gui/{uid}/{LAUNCHD_LABEL}"]],
            }[action]
        if self.platform == "win32":
            return {
                "install": [["schtasks", "/Create", "/TN", JOB, "/XML", str(files[0]), "/F"]],
                "remove": [["schtasks", "/Delete", "/TN", JOB, "/F"]],
                "show": [["schtasks", "/Query", "/TN", JOB, "/V", "/FO", "LIST"]],
            }[action]
        return {
            "install": [
                ["systemctl", "--user", "daemon-reload"],
                ["systemctl", "--user", "enable", "--now", f"{JOB}.timer"],
            ],
            "remove": [["systemctl", "--user", "disable", "--now", f"{JOB}.timer"]],
            "show": [["systemctl", "--user", "list-timers", f"{JOB}.timer", "--no-pager"]],
        }[action]

    def install(self, window: NightWindow) -> list[str]:
        """Write (or rewrite) the job's files and register them; returns what happened."""
        files = self.files(window)
        lines = []
        for path, content in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(content)
            os.replace(partial, path)
            lines.append(f"wrote {path}")
        return lines + self._run_all("install", list(files))

    def remove(self, window: NightWindow) -> list[str]:
        files = [p for p in self.files(window) if p.exists()]
        if not files:
            return ["no scheduled job was installed"]
        lines = self._run_all("remove", files)
        if self.platform.startswith("linux"):
            lines += self._run_all_commands([["systemctl", "--user", "daemon-reload"]])
        for path in files:
            path.unlink()
            lines.append(f"removed {path}")
        return lines

    def show(self, window: NightWindow) -> list[str]:
        files = list(self.files(window))
        present = [p for p in files if p.exists()]
        if not present:
            return ["not installed (run `assistant sleep schedule install`)"]
        lines = [f"installed: {p}" for p in present]
        for command in self._commands("show", present):
            output = self.run(command)
            lines.append(
                output.strip() if output else f"({command[0]} could not say when it next runs)"
            )
        return lines

    def _run_all(self, action: str, files: list[Path]) -> list[str]:
        return self._run_all_commands(self._commands(action, files))

    def _run_all_commands(self, commands: list[list[str]]) -> list[str]:
        lines = []
        for command in commands:
            ok = self.run(command) is not None
            lines.append(f"{'ran' if ok else 'could not run'}: {' '.join(command)}")
        return lines
