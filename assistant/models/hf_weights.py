"""Read a Hugging Face model directory: config, safetensors weights, architecture.

Weights are read straight from the safetensors files with numpy (bf16 widened
by hand), so conversion needs neither torch nor the model class.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.errors import ModelError

_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # widened to float32 on read
    "F64": np.float64,
}


@dataclass(frozen=True)
class Architecture:
    """What the converters need to know about one model family."""

    gguf_name: str  # gguf's MODEL_ARCH name ("llama", "qwen2")
    permute_qk: bool  # HF Llama stores rotary q/k rows half-split; GGUF wants them interleaved


ARCHITECTURES = {
    "LlamaForCausalLM": Architecture("llama", permute_qk=True),
    "Qwen2ForCausalLM": Architecture("qwen2", permute_qk=False),
}


def read_config(model_dir: Path) -> dict:
    """Validate that ``model_dir`` is a supported HF model and return its config."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise ModelError(f"No such file or directory: {model_dir}")
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir} is a file; a model is a Hugging Face directory.")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelError(
            f"{model_dir} is not a Hugging Face model directory (it has no config.json).",
            hint="Point at the folder that holds config.json, *.safetensors and tokenizer.json.",
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{config_path} is not valid JSON ({err}).") from None
    architecture = (config.get("architectures") or ["<none>"])[0]
    if architecture not in ARCHITECTURES:
        raise ModelError(
            f"Unsupported architecture {architecture!r}.",
            hint=f"Supported: {', '.join(sorted(ARCHITECTURES))}.",
        )
    if not list(model_dir.glob("*.safetensors")):
        raise ModelError(f"{model_dir} has no *.safetensors weights.")
    if not (model_dir / "tokenizer.json").is_file():
        raise ModelError(f"{model_dir} has no tokenizer.json (a fast BPE tokenizer is required).")
    return config


def architecture_of(config: dict) -> Architecture:
    return ARCHITECTURES[config["architectures"][0]]


def _header(path: Path) -> tuple[int, dict]:
    """(length of the JSON header, the header) of one safetensors file."""
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        return header_len, json.loads(handle.read(header_len))


def read_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, float array) for every tensor in one safetensors file, memory-mapped."""
    header_len, header = _header(path)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ModelError(f"Tensor {name} has unsupported dtype {info['dtype']}.")
        start, end = info["data_offsets"]
        array = data[start:end].view(dtype).reshape(info["shape"])
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        yield name, array


def iter_weights(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        yield from read_safetensors(path)


def weight_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, read from the safetensors headers alone."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        _, header = _header(path)
        shapes.update(
            (name, tuple(info["shape"])) for name, info in header.items() if name != "__metadata__"
        )
    return shapes


FINGERPRINT_SAMPLES = 64  # evenly spaced 4 KiB reads per weights file


def base_fingerprint(model_dir: Path) -> str:
    """A short hash that tells base models apart without reading every byte.

    It covers each weights file's header (names, shapes, dtypes) and 64 evenly
    spaced 4 KiB samples of its data: a fine-tune or a merged LoRA changes
    nearly every weight, so two bases with the same shapes still differ.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        header_len, header = _header(path)
        digest.update(json.dumps(header, sort_keys=True).encode())
        size = path.stat().st_size - 8 - header_len
        with open(path, "rb") as handle:
            for i in range(FINGERPRINT_SAMPLES):
                handle.seek(8 + header_len + size * i // FINGERPRINT_SAMPLES)
                digest.update(handle.read(4096))
    return digest.hexdigest()[:16]


def source_dtype(config: dict) -> str:
    return str(config.get("torch_dtype") or config.get("dtype") or "float32")
