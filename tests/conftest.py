from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_models import build_model

TEST_PASSPHRASE = "correct horse battery staple"
# Demo model builds are cached outside the clone, keyed by their config and sources,
# so a test run trains each preset at most once and later runs reuse it.
TEST_CACHE = Path(
    os.environ.get("ASSISTANT_TEST_CACHE") or Path.home() / ".cache" / "sleeping-assistant-tests"
)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ASSISTANT_HOME with a passphrase-keyed memory."""
    root = tmp_path / "home"
    monkeypatch.setenv("ASSISTANT_HOME", str(root))
    monkeypatch.setenv("ASSISTANT_PASSPHRASE", TEST_PASSPHRASE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", seed=1)


@pytest.fixture(scope="session")
def tiny_demo() -> Path:
    """The tiny demo preset: a weak model trained in seconds, for plumbing tests."""
    from assistant.demo.build import build_demo

    return build_demo(TEST_CACHE / "demo", "tiny")


@pytest.fixture
def runtime(home: Path):
    from assistant.runtime import Runtime

    rt = Runtime()
    yield rt
    rt.database.close()


@pytest.fixture
def model_home(home: Path, tiny_llama: Path):
    """A home with the tiny Llama registered as the active model."""
    from click.testing import CliRunner

    from assistant.cli import cli

    result = CliRunner().invoke(cli, ["model", "add", str(tiny_llama), "--name", "tiny"])
    assert result.exit_code == 0, result.output
    return home
