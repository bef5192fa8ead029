from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_models import build_model

TEST_PASSPHRASE = "correct horse battery staple"
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
