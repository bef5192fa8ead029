"""A PEFT LoRA adapter held in memory: what ``adapter_config.json`` and
``adapter_model.safetensors`` hold, without the files.

A learned expert is memory, so it exists as plaintext only in memory: the
backends build and load experts as ``PeftAdapter`` values, the expert vault
seals their bytes, and only an explicit export (or an import) touches a
plaintext adapter folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.errors import ModelError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class PeftAdapter:
    config: dict
    weights: bytes  # a safetensors file's bytes, float32

    @classmethod
    def read(cls, directory: Path) -> PeftAdapter:
        """An adapter folder (weights in any float dtype safetensors holds) as float32."""
        from safetensors.numpy import save

        from assistant.models.hf_weights import read_safetensors

        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        if not config_path.is_file() or not weights_path.is_file():
            raise ModelError(
                f"{directory} is not a PEFT adapter (need {CONFIG_FILE} and {WEIGHTS_FILE})."
            )
        tensors = {
            name: np.ascontiguousarray(array, np.float32)
            for name, array in read_safetensors(weights_path)
        }
        return cls(json.loads(config_path.read_text()), save(tensors))

    @classmethod
    def from_files(cls, config: bytes, weights: bytes) -> PeftAdapter:
        return cls(json.loads(config), weights)

    @property
    def scaling(self) -> float:
        """PEFT's multiplier of ``B @ A``: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        rank = self.config["r"]
        alpha = float(self.config.get("lora_alpha", rank))
        return alpha / math.sqrt(rank) if self.config.get("use_rslora") else alpha / rank

    def config_bytes(self) -> bytes:
        return json.dumps(self.config, indent=2, sort_keys=True).encode()

    def tensors(self) -> dict[str, np.ndarray]:
        from safetensors.numpy import load

        return load(self.weights)

    def write(self, directory: Path) -> Path:
        """The adapter as a PEFT folder (an export: plaintext by nature)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (directory / CONFIG_FILE).write_bytes(self.config_bytes())
        (directory / WEIGHTS_FILE).write_bytes(self.weights)
        return directory
