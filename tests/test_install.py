"""The checkout hides no installed package: run from the repository's root (as `python -m
pytest` and `python -c` are), the libraries the assistant uses import their own dependencies,
not our folders of the same name."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_peft_and_transformers_import_beside_our_kernels_from_the_root() -> None:
    # transformers imports Hugging Face's `kernels` package when it is installed.
    result = subprocess.run(
        [sys.executable, "-c", "import peft, transformers, assistant.kernels"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_no_root_folder_is_a_regular_package_named_like_an_installed_one() -> None:
    # Our own names: the package itself, and the tests (whose package must win, for
    # `from tests.conftest import ...`; mlx declares a top-level `tests` it does not install).
    ours = {"assistant", "tests"}
    installed = set(importlib.metadata.packages_distributions()) - ours
    shadowing = [
        folder.name
        for folder in ROOT.iterdir()
        if (folder / "__init__.py").is_file() and folder.name in installed
    ]
    assert shadowing == []


def test_no_benchmark_script_is_named_like_an_installed_module() -> None:
    # `python bench/x.py` puts bench/ first on the path: a bench/kernels.py hid Hugging
    # Face's `kernels` from transformers there.
    installed = set(importlib.metadata.packages_distributions())
    shadowing = [path.name for path in (ROOT / "bench").glob("*.py") if path.stem in installed]
    assert shadowing == []
