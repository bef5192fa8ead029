"""Which training backend a night uses, and loading it.

Two backends implement the protocol: torch (transformers + PEFT; CUDA, MPS or
the CPU) and MLX (Apple silicon). ``pip install .`` brings MLX on macOS arm64,
torch on Linux and Windows, and neither on an Intel Mac (MLX needs Apple
silicon, PyTorch publishes no Intel Mac wheels after 2.2: see pyproject.toml),
where ``resolve`` says what is missing. Either may also be missing or added by
hand, so ``auto`` picks the one meant for this machine and falls back to the other.
Whether one is installed is read from the import system without importing it:
importing torch takes seconds, and ``doctor`` and the runner ask often.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

from assistant.backends.protocol import LearnedExpert, NewExpert
from assistant.errors import AssistantError

CHOICES = ("auto", "torch", "mlx")
# The modules each backend imports (none is imported to check).
MODULES = {"torch": ("torch", "peft", "transformers"), "mlx": ("mlx", "mlx_lm")}
DEVICES = {"torch": ("auto", "cpu", "cuda", "mps"), "mlx": ("auto", "cpu", "gpu")}


def apple_silicon() -> bool:
    """macOS on arm64: where MLX runs on the GPU and pip installs it instead of torch."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def installed(name: str) -> bool:
    """Whether every module backend ``name`` imports can be found (none is imported)."""
    for module in MODULES[name]:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):  # a broken or half-removed package
            return False
    return True


def install_hint(name: str) -> str:
    """The pip command that brings backend ``name`` (names as in pyproject.toml)."""
    if name == "torch":
        return "pip install torch peft"
    # Off macOS, MLX's own wheel holds no compute library: the CPU one is an extra.
    return "pip install mlx mlx-lm" if sys.platform == "darwin" else 'pip install "mlx[cpu]" mlx-lm'


def preferred() -> str:
    """The backend meant for this machine, installed or not."""
    return "mlx" if apple_silicon() else "torch"


def resolve(requested: str) -> str:
    """``torch`` or ``mlx`` for ``auto|torch|mlx``; an error saying what to install if the
    backend asked for (for auto: either) is missing."""
    if requested not in CHOICES:
        raise AssistantError(
            f"Unknown training backend {requested!r}.", hint=f"Use {', '.join(CHOICES)}."
        )
    if requested != "auto":
        if not installed(requested):
            raise AssistantError(
                f"The {requested} training backend is not installed.",
                hint=install_hint(requested),
            )
        return requested
    first = preferred()
    other = "torch" if first == "mlx" else "mlx"
    for name in (first, other):
        if installed(name):
            return name
    if apple_silicon():
        hint = f"On Apple silicon: {install_hint('mlx')}"
    elif sys.platform == "darwin":  # pyproject installs neither here
        hint = (
            "On an Intel Mac: MLX needs Apple silicon and PyTorch has published no Intel Mac"
            " wheels since 2.2; with a torch 2.6 or later built here, pip install peft"
        )
    else:
        hint = install_hint("torch")
    raise AssistantError("No training backend is installed, so the assistant cannot sleep.", hint)


def check_device(name: str, device: str) -> None:
    """Refuse a device backend ``name`` has no word for (MLX's gpu under torch, cuda under
    MLX) before the night begins, not when the backend loads."""
    if device not in DEVICES[name]:
        raise AssistantError(
            f"The {name} training backend has no device {device!r}.",
            hint=f"With {name} use --device {', '.join(DEVICES[name])}.",
        )


def load_backend(
    name: str,
    model_dir: Path,
    learned: Sequence[LearnedExpert] = (),
    new_expert: NewExpert | None = None,
    device: str = "auto",
    kernels: str = "auto",
):
    """Backend ``name`` (resolved: torch or mlx) on ``model_dir``, imported only now.
    ``kernels`` (auto|on|off, the config's ``sleep_kernels``): see ``use_kernels``."""
    if name == "torch":
        from assistant.backends.torch_backend import TorchBackend as Backend
    elif name == "mlx":
        from assistant.backends.mlx_backend import MlxBackend as Backend
    else:
        raise AssistantError(f"Unknown training backend {name!r}.", hint="Use torch or mlx.")
    if kernels not in ("auto", "on", "off"):
        raise AssistantError(
            f"Unknown sleep_kernels setting {kernels!r}.", hint="Use auto, on or off."
        )
    return Backend(model_dir, learned, new_expert, device, kernels=kernels)
