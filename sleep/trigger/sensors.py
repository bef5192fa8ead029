"""What the machine says about power and the person: each sensor reads the real source and
says "unknown" (``value is None``) when it cannot tell, never a guess.

Sources are injectable (a ``/sys`` root, a command runner, the platform name)
so tests can feed fabricated trees and command outputs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Runs a command and returns its stdout, or None when it is missing or fails.
CommandRunner = Callable[[Sequence[str]], "str | None"]

SYS_POWER_SUPPLY = Path("/sys/class/power_supply")
HEARTBEAT_FILE = "chat.heartbeat"
OPEN_FILE = "chat.open"
OPEN_BEAT_SECONDS = 20  # how often an open chat app says it is still open


@dataclass(frozen=True)
class Reading:
    """A sensor's answer: ``value`` (None: unknown), where it came from, and why."""

    value: object
    source: str
    detail: str = ""

    @property
    def known(self) -> bool:
        return self.value is not None


def run_command(command: Sequence[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


# -- power ----------------------------------------------------------------------------
def _sysfs_power(root: Path) -> Reading | None:
    """Linux: any online Mains supply means external power; no supply at all means a desktop."""
    if not root.is_dir():
        return None
    kinds: dict[str, list[Path]] = {}
    for supply in sorted(root.iterdir()):
        kind = _read(supply / "type")
        if kind:
            kinds.setdefault(kind, []).append(supply)
    mains = kinds.get("Mains", [])
    if mains:
        online = [s.name for s in mains if _read(s / "online") == "1"]
        if online:
            return Reading(True, "sysfs", f"{', '.join(online)} online")
        return Reading(False, "sysfs", f"{', '.join(s.name for s in mains)} offline")
    batteries = kinds.get("Battery", [])
    if not batteries:
        return Reading(True, "sysfs", "no battery: mains powered")
    statuses = {_read(b / "status") for b in batteries}
    if "Discharging" in statuses:
        return Reading(False, "sysfs", "battery discharging")
    if statuses & {"Charging", "Full"}:
        return Reading(True, "sysfs", "battery charging or full")
    return Reading(None, "sysfs", "a battery but no mains supply reported")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _pmset_power(run: CommandRunner) -> Reading:
    output = run(["pmset", "-g", "batt"])
    if output is None:
        return Reading(None, "pmset", "pmset failed")
    match = re.search(r"drawing from '([^']+)'", output)
    if not match:
        return Reading(None, "pmset", "unrecognised pmset output")
    return Reading(match[1] == "AC Power", "pmset", match[1])


def _psutil_power() -> Reading:
    import psutil

    battery = psutil.sensors_battery() if hasattr(psutil, "sensors_battery") else None
    if battery is None:
        return Reading(True, "psutil", "no battery: mains powered")
    if battery.power_plugged is None:
        return Reading(None, "psutil", "battery found, plug state not reported")
    return Reading(bool(battery.power_plugged), "psutil", f"battery at {battery.percent:.0f}%")


def read_power(
    platform: str = sys.platform,
    sys_root: Path = SYS_POWER_SUPPLY,
    run: CommandRunner = run_command,
) -> Reading:
    """On external power? True, False, or None (unknown)."""
    if platform.startswith("linux"):
        return _sysfs_power(sys_root) or _psutil_power()
    if platform == "darwin":
        return _pmset_power(run)
    return _psutil_power()


# -- user idle time --------------------------------------------------------------------
def _logind_idle(run: CommandRunner, now: float) -> Reading:
    output = run(
        ["loginctl", "show-user", str(os.getuid()), "-p", "IdleHint", "-p", "IdleSinceHint"]
    )
    if output is None:
        return Reading(None, "logind", "loginctl failed")
    fields = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    hint, since = fields.get("IdleHint"), fields.get("IdleSinceHint", "0")
    if hint == "no":
        return Reading(0.0, "logind", "session active")
    if hint == "yes" and since.isdigit() and int(since) > 0:
        return Reading(max(0.0, now - int(since) / 1e6), "logind", "IdleSinceHint")
    return Reading(None, "logind", "no idle hint")


def _x11_idle() -> Reading:
    """Milliseconds since the last X input, through the XScreenSaver extension."""
    import ctypes
    import ctypes.util

    if not os.environ.get("DISPLAY"):
        return Reading(None, "x11", "no DISPLAY")
    names = [ctypes.util.find_library(n) for n in ("X11", "Xss")]
    if not all(names):
        return Reading(None, "x11", "libX11 or libXss not installed")

    class Info(ctypes.Structure):
        _fields_ = [
            ("window", ctypes.c_ulong),
            ("state", ctypes.c_int),
            ("kind", ctypes.c_int),
            ("til_or_since", ctypes.c_ulong),
            ("idle", ctypes.c_ulong),
            ("event_mask", ctypes.c_ulong),
        ]

    xlib, xss = (ctypes.cdll.LoadLibrary(n) for n in names)
    xlib.XOpenDisplay.restype = ctypes.c_void_p
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(Info)
    display = xlib.XOpenDisplay(None)
    if not display:
        return Reading(None, "x11", "cannot open the display")
    try:
        info = xss.XScreenSaverAllocInfo()
        root = xlib.XDefaultRootWindow(ctypes.c_void_p(display))
        if not xss.XScreenSaverQueryInfo(ctypes.c_void_p(display), root, info):
            return Reading(None, "x11", "no XScreenSaver extension")
        return Reading(info.contents.idle / 1000.0, "x11", "XScreenSaver")
    finally:
        xlib.XCloseDisplay(ctypes.c_void_p(display))


def _ioreg_idle(run: CommandRunner) -> Reading:
    output = run(["ioreg", "-c", "IOHIDSystem", "-d", "4"])
    match = re.search(r'"HIDIdleTime"\s*=\s*(\d+)', output or "")
    if not match:
        return Reading(None, "ioreg", "no HIDIdleTime")
    return Reading(int(match[1]) / 1e9, "ioreg", "HIDIdleTime")


def _windows_idle() -> Reading:
    import ctypes

    class LastInput(ctypes.Structure):
        _fields_ = [("size", ctypes.c_uint), ("time", ctypes.c_uint)]

    info = LastInput(ctypes.sizeof(LastInput), 0)
    user32, kernel32 = ctypes.windll.user32, ctypes.windll.kernel32  # type: ignore[attr-defined]
    if not user32.GetLastInputInfo(ctypes.byref(info)):
        return Reading(None, "GetLastInputInfo", "call failed")
    return Reading(
        ((kernel32.GetTickCount() - info.time) & 0xFFFFFFFF) / 1000.0, "GetLastInputInfo"
    )


def read_idle_seconds(
    platform: str = sys.platform, run: CommandRunner = run_command, now: float | None = None
) -> Reading:
    """Seconds since the person last touched keyboard or mouse, or None (unknown)."""
    now = time.time() if now is None else now
    if platform.startswith("linux"):
        x11 = _x11_idle()
        return x11 if x11.known else _logind_idle(run, now)
    if platform == "darwin":
        return _ioreg_idle(run)
    if platform == "win32":
        return _windows_idle()
    return Reading(None, platform, "no idle sensor for this system")


# -- the chat app's own activity ---------------------------------------------------------
class Heartbeat:
    """Two file times: the person's last use of the chat app, and the app saying it is open.

    The app records a use when it opens and on every key press or click; a running
    sleep watches that to wake up, and idleness counts from it. Separately, the app
    beats every ``OPEN_BEAT_SECONDS`` while open, so an app left open reads as open
    but idle, never as in use.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / HEARTBEAT_FILE
        self.open_path = data_dir / OPEN_FILE

    def beat(self) -> None:
        """The person used the app just now."""
        _touch(self.path)

    def beat_open(self) -> None:
        """The app is still open (said by a timer, not by the person)."""
        _touch(self.open_path)

    def last(self) -> float | None:
        """Unix time of the last use, or None if the app never ran."""
        return _mtime(self.path)

    def seconds_since(self, now: float | None = None) -> Reading:
        """Seconds since the last use."""
        last = self.last()
        if last is None:
            return Reading(float("inf"), "chat app", "never opened")
        return Reading(max(0.0, (time.time() if now is None else now) - last), "chat app")

    def is_open(self, now: float | None = None) -> bool:
        """Whether the app beat recently enough to be open (three beats' grace)."""
        beat = _mtime(self.open_path)
        now = time.time() if now is None else now
        return beat is not None and now - beat < 3 * OPEN_BEAT_SECONDS


def _touch(path: Path) -> None:
    path.touch(mode=0o600)
    os.utime(path)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None
