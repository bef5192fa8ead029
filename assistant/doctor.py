"""`assistant doctor`: what works on this machine, each line saying where it was read from.

Package versions come from their metadata (no import); only the training
backends that are installed are imported, to list their devices, and the line
"sleep uses" says which one a night picks for the config's ``sleep_backend``
(``backends.choice``; ``sleep --now --backend`` overrides it for one night).
"""

from __future__ import annotations

from collections.abc import Iterator

from assistant.runtime import Runtime


def _sensor_lines(runtime: Runtime) -> Iterator[str]:
    from assistant.sleep.trigger.sensors import Heartbeat, read_idle_seconds, read_power

    power = read_power()
    state = {True: "on external power", False: "on battery", None: "UNKNOWN"}[power.value]
    yield f"power sensor: {state} ({power.source}: {power.detail})"
    idle = read_idle_seconds()
    yield (
        f"idle sensor: {idle.value / 60:.0f} min idle ({idle.source})"
        if idle.known
        else f"idle sensor: UNKNOWN ({idle.source}: {idle.detail}); the chat app's activity is used"
    )
    beat = Heartbeat(runtime.paths.data_dir).seconds_since()
    yield f"chat app heartbeat: {beat.detail or f'{beat.value:.0f} s ago'}"


def _backend_lines(requested: str) -> Iterator[str]:
    from importlib.metadata import PackageNotFoundError, version

    from assistant.backends import choice
    from assistant.errors import AssistantError

    for package in ("llama-cpp-python", "torch", "peft", "transformers", "mlx", "mlx-lm"):
        try:
            yield f"{package}: {version(package)}"
        except PackageNotFoundError:
            yield f"{package}: not installed"
    for name, devices in (("torch", _torch_devices), ("mlx", _mlx_devices)):
        if not choice.installed(name):
            yield f"training backend {name}: not installed ({choice.install_hint(name)})"
            continue
        try:
            yield f"training backend {name}: available (devices {', '.join(devices())})"
        except Exception as err:  # installed but broken: say so rather than fail the doctor
            yield f"training backend {name}: installed but fails to load ({err})"
    try:
        yield f"sleep uses: {choice.resolve(requested)} (sleep_backend {requested})"
    except AssistantError as err:
        yield f"sleep uses: nothing (sleep_backend {requested}: {err} {err.hint})"


def _torch_devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append(f"cuda ({torch.cuda.get_device_name(0)})")
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _mlx_devices() -> list[str]:
    import mlx.core as mx

    return ["cpu", "gpu"] if mx.is_available(mx.gpu) else ["cpu"]


def diagnose(runtime: Runtime) -> list[str]:
    from assistant.sleep.trigger.auto import how_this_machine_sleeps
    from assistant.sleep.trigger.policy import NightWindow
    from assistant.sleep.trigger.schedule import ScheduledJob
    from assistant.store.keys import current_source

    lines = list(_sensor_lines(runtime))
    lines.append(f"key store: {current_source(runtime.database) or 'not set up yet'}")
    lines.append(f"automatic sleep: {how_this_machine_sleeps(runtime)}")
    model = runtime.models.active()
    lines.append(f"model: {model.name if model else 'none registered'}")
    lines += list(_backend_lines(runtime.config.sleep_backend))
    window = NightWindow.parse(runtime.config.sleep_window)
    lines += [f"scheduled job: {line}" for line in ScheduledJob().show(window)]
    return lines
