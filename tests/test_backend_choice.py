"""Which training backend a night uses (`backends/choice.py`), and sleeping without torch.

`resolve` is checked on pretend machines (the platform and what is installed
monkeypatched); then the real CLI runs in a subprocess where torch (and, for
the second case, MLX) cannot be imported, as on a Mac that installed only MLX
or a machine that installed neither.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from assistant.backends import choice
from assistant.cli import cli
from assistant.errors import AssistantError
from tests import nights

THIS_MACHINE = (sys.platform, platform.machine())
APPLE_SILICON, INTEL_MAC, LINUX = ("darwin", "arm64"), ("darwin", "x86_64"), ("linux", "x86_64")


def _machine(monkeypatch: pytest.MonkeyPatch, where: tuple[str, str], *installed: str) -> None:
    """``choice`` sees a pretend (platform, machine) with only ``installed`` backends. Its own
    names ``sys`` and ``platform`` are swapped for stand-ins, so the rest of the process
    (pytest, numpy, llama.cpp) never sees a fake platform."""
    monkeypatch.setattr(choice, "sys", SimpleNamespace(platform=where[0]))
    monkeypatch.setattr(choice, "platform", SimpleNamespace(machine=lambda: where[1]))
    monkeypatch.setattr(choice, "installed", lambda name: name in installed)


@pytest.mark.parametrize(
    ("where", "installed", "expected"),
    [
        (APPLE_SILICON, ("torch", "mlx"), "mlx"),
        (APPLE_SILICON, ("torch",), "torch"),  # the preferred one missing: the other
        (LINUX, ("torch", "mlx"), "torch"),
        (LINUX, ("mlx",), "mlx"),
        (INTEL_MAC, ("torch",), "torch"),
    ],
)
def test_auto_picks_the_machines_backend_else_the_one_installed(
    monkeypatch: pytest.MonkeyPatch, where, installed, expected
) -> None:
    _machine(monkeypatch, where, *installed)
    assert choice.resolve("auto") == expected
    assert (sys.platform, platform.machine()) == THIS_MACHINE  # only choice was fooled


@pytest.mark.parametrize(
    ("where", "hint"),
    [
        (APPLE_SILICON, "On Apple silicon: pip install mlx mlx-lm"),
        (LINUX, "pip install torch peft"),
        (INTEL_MAC, "On an Intel Mac: MLX needs Apple silicon"),
    ],
)
def test_with_no_backend_auto_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, where, hint
) -> None:
    _machine(monkeypatch, where)
    with pytest.raises(AssistantError, match="No training backend is installed") as raised:
        choice.resolve("auto")
    assert raised.value.hint.startswith(hint)


def test_an_explicit_backend_is_used_anywhere_it_is_installed_or_named_for_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _machine(monkeypatch, APPLE_SILICON, "torch", "mlx")
    assert choice.resolve("torch") == "torch"
    _machine(monkeypatch, LINUX, "torch", "mlx")
    assert choice.resolve("mlx") == "mlx"
    _machine(monkeypatch, LINUX, "mlx")
    with pytest.raises(AssistantError, match="torch training backend is not installed") as raised:
        choice.resolve("torch")
    assert raised.value.hint == "pip install torch peft"
    _machine(monkeypatch, LINUX, "torch")
    with pytest.raises(AssistantError, match="mlx training backend is not installed") as raised:
        choice.resolve("mlx")
    assert raised.value.hint == 'pip install "mlx[cpu]" mlx-lm'  # the CPU build, off macOS
    _machine(monkeypatch, APPLE_SILICON, "torch")
    with pytest.raises(AssistantError) as raised:
        choice.resolve("mlx")
    assert raised.value.hint == "pip install mlx mlx-lm"


def test_an_unknown_backend_lists_the_choices() -> None:
    with pytest.raises(AssistantError, match="Unknown training backend 'jax'") as raised:
        choice.resolve("jax")
    assert raised.value.hint == "Use auto, torch, mlx."
    with pytest.raises(AssistantError, match="Unknown training backend"):
        choice.load_backend("jax", Path("."))


def test_what_is_installed_is_found_without_importing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlx_lm", None)  # as if not installed
    assert not choice.installed("mlx")
    checked = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from assistant.backends import choice;"
            "print(choice.installed('torch'), 'torch' in sys.modules, 'mlx' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert checked.stdout.split() == ["True", "False", "False"]


def test_doctor_says_what_the_configs_sleep_backend_gets(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _machine(monkeypatch, LINUX, "mlx")  # (MLX's devices are listed: mlx is imported)
    doctor = CliRunner().invoke(cli, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert "sleep uses: mlx (sleep_backend auto)" in doctor.output.splitlines()
    nights.configure(home, {"sleep_backend": "torch"})  # what a night reads, not auto's pick
    doctor = CliRunner().invoke(cli, ["doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert (
        "sleep uses: nothing (sleep_backend torch: The torch training backend is not"
        " installed. pip install torch peft)" in doctor.output.splitlines()
    )


# -- the real CLI where torch (and MLX) cannot be imported ---------------------------------
# Putting None in sys.modules is how Python marks a module as missing: importing it raises
# ModuleNotFoundError and importlib.util.find_spec finds nothing, as if it were not installed.
WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from assistant.cli import main
sys.argv = ["assistant", *sys.argv[2:]]
main()
"""


def _assistant_without(hidden: str, *args: str) -> subprocess.CompletedProcess:
    """`assistant ARGS` in a subprocess (ASSISTANT_HOME from the fixture) lacking ``hidden``."""
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, hidden, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _tell(*messages: str) -> None:
    """Straight into the memory, as a chat would (the tiny model's replies take long)."""
    from assistant.runtime import Runtime

    runtime = Runtime()
    conversation = runtime.memory.new_conversation()
    for message in messages:
        runtime.memory.append(conversation, "user", message)
        runtime.memory.append(conversation, "assistant", "Noted.")
    runtime.database.close()


def test_without_torch_sleep_trains_with_mlx_on_a_gguf_models_torch_free_copy(
    home: Path, tmp_path: Path, tiny_llama: Path
) -> None:
    pytest.importorskip("mlx_lm")
    from assistant.models.convert import convert_to_gguf

    gguf_path = convert_to_gguf(tiny_llama, tmp_path / "tiny.gguf", "tiny")
    added = CliRunner().invoke(cli, ["model", "add", str(gguf_path), "--name", "tiny"])
    assert added.exit_code == 0, added.output
    nights.configure(home, nights.SHORT_NIGHT)
    _tell("My goldfish is called Zorblax-4417.")
    # Out of budget at once: the night stops in N3 right after the backend has loaded.
    night = _assistant_without(
        "torch,peft", "sleep", "--now", "--json", "--backend", "auto", "--budget-minutes", "0"
    )
    assert night.returncode == 0, night.stderr
    assert "N3 load: training with mlx" in night.stderr
    report = json.loads(night.stdout)
    assert report["backend"].startswith("mlx/") and report["outcome"] == "interrupted"
    # The training copy of the GGUF file was made without torch, for MLX to load.
    with nights.db(home) as conn:
        (training_copy,) = conn.execute("SELECT hf_dir FROM models").fetchone()
    assert (Path(training_copy) / "model.safetensors").is_file()


def test_with_no_backend_sleep_says_exactly_what_to_install_and_changes_nothing(
    model_home: Path,
) -> None:
    if sys.platform == "darwin" and not choice.apple_silicon():
        pytest.skip("an Intel Mac's hint is about building torch")
    _tell("My goldfish is called Zorblax-4417.")
    night = _assistant_without("torch,peft,mlx,mlx_lm", "sleep", "--now", "--backend", "auto")
    assert night.returncode == 1
    install = "On Apple silicon: pip install mlx mlx-lm" if choice.apple_silicon() else None
    assert night.stderr.splitlines()[-2:] == [
        "Error: No training backend is installed, so the assistant cannot sleep.",
        f"Hint: {install or 'pip install torch peft'}",
    ]
    with nights.db(model_home) as conn:  # no night began: nothing sealed off, nothing to redo
        assert conn.execute("SELECT count(*) FROM sleeps").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (2,)
    doctor = _assistant_without("torch,peft,mlx,mlx_lm", "doctor")
    assert "training backend torch: not installed (pip install torch peft)" in doctor.stdout
    assert (
        "sleep uses: nothing (sleep_backend auto: No training backend is installed" in doctor.stdout
    )


def test_a_device_the_backend_has_no_word_for_is_refused_before_the_night(
    model_home: Path,
) -> None:
    with pytest.raises(AssistantError, match="torch training backend has no device 'gpu'") as bad:
        choice.check_device("torch", "gpu")
    assert bad.value.hint == "With torch use --device auto, cpu, cuda, mps."
    with pytest.raises(AssistantError, match="mlx training backend has no device 'cuda'"):
        choice.check_device("mlx", "cuda")
    choice.check_device("mlx", "gpu")  # a word MLX has, whether or not this machine has one

    _tell("My goldfish is called Zorblax-4417.")
    night = CliRunner().invoke(cli, ["sleep", "--now", "--backend", "torch", "--device", "gpu"])
    assert night.exit_code == 1
    assert "torch training backend has no device 'gpu'" in night.output
    with nights.db(model_home) as conn:  # refused before N1: nothing sealed off, nothing to redo
        assert conn.execute("SELECT count(*) FROM sleeps").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM turns").fetchone() == (2,)
