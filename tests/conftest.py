from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from assistant.store import keys
from tests.tiny_models import build_lora, build_model

TEST_PASSPHRASE = "correct horse battery staple"
PRODUCT_SCRYPT_PARAMS = dict(keys.SCRYPT_PARAMS)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _mlx_has_a_gpu() -> bool:
    try:
        import mlx.core as mx
    except ImportError:  # not installed, or broken: the MLX tests say which
        return False
    return mx.is_available(mx.gpu)


# Whole nights on the starter with MLX run where MLX has a GPU (Metal on Apple silicon). MLX's
# CPU device multiplies float32 matrices about 30x slower than torch on the same CPU (measured:
# `python bench/sleep.py --backend mlx`), so there a night would not fit a test; the backend
# itself is checked against torch on the CPU device in tests/test_backend_mlx.py.
MLX_NIGHTS = pytest.mark.skipif(
    not _mlx_has_a_gpu(),
    reason="MLX has no GPU here; its CPU device trains about 30x slower than torch",
)


# The product derives a passphrase key with scrypt at n=2**17 (0.3 s and 128 MiB here), at
# every unlock: every CLI call and Runtime of the suite, hundreds of them. Stores made by the
# tests use this cheap cost instead; it is stored per database, as a store from an older
# version keeps its own, so a subprocess opening such a store derives cheaply too. The tests
# of the cost itself ask for `product_key_derivation`.
TEST_SCRYPT_PARAMS = {"n": 2**10, "r": 8, "p": 1}


@pytest.fixture(autouse=True, scope="session")
def fast_key_derivation():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys, "SCRYPT_PARAMS", TEST_SCRYPT_PARAMS)
        yield


@pytest.fixture
def product_key_derivation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The product's scrypt cost for new keys, for the tests that check it."""
    monkeypatch.setattr(keys, "SCRYPT_PARAMS", PRODUCT_SCRYPT_PARAMS)


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
def starter_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The starter model's training copy (its GGUF dequantized to an HF directory)."""
    from assistant.models.gguf_import import dequantize_to_hf
    from assistant.models.starter import starter_gguf

    return dequantize_to_hf(starter_gguf(), tmp_path_factory.mktemp("starter") / "hf")


@pytest.fixture
def starter_training_copy(home: Path, starter_hf: Path) -> None:
    """``home`` starts with the starter's training copy made, linked from the session's one,
    for tests whose homes train on the starter (tests/nights.py)."""
    from tests.nights import link_training_copy

    link_training_copy(home, starter_hf)


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


# What a plaintext expert file would contain: GGUF LoRA tensor names and keys, PEFT tensor
# names, a safetensors header.
PLAINTEXT_MARKS = (b"lora_a", b"adapter.lora.alpha", b"lora_A", b'"data_offsets"')


def plaintext_expert_files(home: Path, tensors: list) -> list[str]:
    """Files under ``home`` (outside the base models' folders, which hold public weights) that
    hold an expert in plaintext: a mark above, or a run of one of its tensors' raw bytes."""
    import numpy as np

    needles = list(PLAINTEXT_MARKS)
    for array in tensors:
        raw = np.ascontiguousarray(array, np.float32).tobytes()
        needles.append(raw[len(raw) // 2 : len(raw) // 2 + 64])
    models = home / "data" / "models"
    return [
        str(path)
        for path in home.rglob("*")
        if path.is_file()
        and models not in path.parents
        and any(needle in path.read_bytes() for needle in needles)
    ]


# Imported experts for the adapter tests, (rank, alpha, rsLoRA, scale): different ranks and
# scalings, so folding them in is tested.
EXPERTS = [(4, 8.0, False, 1.0), (8, 8.0, True, 0.5), (4, 16.0, False, 0.75)]


@pytest.fixture(scope="session")
def foreign_adapters(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> list[Path]:
    """PEFT adapters for the tiny Llama, trained "elsewhere" (random), as folders."""
    root = tmp_path_factory.mktemp("adapters")
    return [
        build_lora(tiny_llama, root / f"lora{i}", rank, alpha, seed=10 + i, rslora=rslora)
        for i, (rank, alpha, rslora, _) in enumerate(EXPERTS)
    ]


@pytest.fixture
def learned_home(model_home: Path, foreign_adapters: list[Path]) -> Path:
    """The tiny model with three experts, the first with a kept probe set (as sleep keeps)."""
    from click.testing import CliRunner

    from assistant.cli import cli
    from assistant.runtime import Runtime

    for adapter, (*_, scale) in zip(foreign_adapters, EXPERTS, strict=True):
        result = CliRunner().invoke(
            cli, ["adapters", "import", str(adapter), "--scale", str(scale)]
        )
        assert result.exit_code == 0, result.output
    runtime = Runtime()
    sealed = runtime.memory.seal("expert-probes:1", json.dumps([["q?", "a"]]).encode())
    runtime.database.execute("INSERT INTO expert_probes VALUES (1, ?)", [sealed])
    runtime.database.close()
    return model_home


def as_before_sealing(runtime) -> None:
    """Make an unlocked store look written by a version from before records were sealed:
    its key check under the older associated data (what its next unlock looks for)."""
    import base64

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from assistant.store import keys

    nonce = os.urandom(12)
    blob = nonce + AESGCM(runtime.master_key).encrypt(nonce, b"ok", keys._BEFORE_SEALING_AD)
    runtime.database.set_meta("key_check", base64.b64encode(blob).decode())


@pytest.fixture
def memory_keyring():
    """An OS keychain held in memory, set process-wide for one test (keyring keeps the backend
    it chose first); yields its entries, {(service, name): secret}."""
    import keyring
    from keyring.backend import KeyringBackend

    entries: dict = {}

    class MemoryKeyring(KeyringBackend):
        priority = 1

        def get_password(self, service, username):
            return entries.get((service, username))

        def set_password(self, service, username, password):
            entries[(service, username)] = password

        def delete_password(self, service, username):
            entries.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    yield entries
    keyring.set_keyring(previous)
