"""Write a LoRA update in the formats other tools load.

- ``peft``: ``adapter_config.json`` + ``adapter_model.safetensors`` for
  ``peft.PeftModel.from_pretrained``;
- ``gguf``: a GGUF LoRA for llama.cpp (``--lora``, ``Llama(lora_path=...)``) and
  Ollama (``ADAPTER``), with a Modelfile next to it;
- ``mlx``: ``adapters.safetensors`` + ``adapter_config.json`` for
  ``mlx_lm.load(base, adapter_path=...)``.

Scales are folded into B, so each format applies the update with scaling 1
(alpha = rank). No training framework is imported here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.adapters.lora import Update
from assistant.errors import ModelError
from assistant.experts.lora_gguf import write_gguf_tensors

GGUF_ADAPTER = "adapter.gguf"


@dataclass(frozen=True)
class Base:
    """What an export needs to know about the base model."""

    config: dict
    name_or_path: str  # written as PEFT's base_model_name_or_path
    gguf_path: Path  # the base GGUF the Modelfile points at


def _leaf_names(update: Update) -> list[str]:
    return sorted({module.rsplit(".", 1)[-1] for module in update.pairs})


def write_peft(update: Update, out_dir: Path, base: Base) -> None:
    from safetensors.numpy import save_file

    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base.name_or_path,
        "r": update.rank,
        "lora_alpha": update.rank,
        "lora_dropout": 0.0,
        "target_modules": _leaf_names(update),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
    }
    tensors = {}
    for module, (lora_a, lora_b) in update.pairs.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = np.ascontiguousarray(lora_a)
        tensors[f"base_model.model.{module}.lora_B.weight"] = np.ascontiguousarray(lora_b)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))


def write_gguf(update: Update, out_dir: Path, base: Base) -> None:
    write_gguf_tensors(update.pairs, float(update.rank), base.config, out_dir / GGUF_ADAPTER)
    (out_dir / "Modelfile").write_text(
        "# Ollama: `ollama create NAME -f Modelfile` (everything stays on this computer).\n"
        f"FROM {base.gguf_path}\n"
        f"ADAPTER ./{GGUF_ADAPTER}\n"
    )


def write_mlx(update: Update, out_dir: Path, base: Base) -> None:
    """mlx-lm's LoRALinear computes ``scale * (x @ lora_a) @ lora_b``: A and B transposed."""
    from safetensors.numpy import save_file

    prefix = "model.layers."
    keys = sorted({module.split(".", 3)[3] for module in update.pairs})
    if any(not module.startswith(prefix) for module in update.pairs):
        raise ModelError("MLX adapters can only hold layers of the decoder blocks.")
    config = {
        "fine_tune_type": "lora",
        "num_layers": base.config["num_hidden_layers"],
        "lora_parameters": {"rank": update.rank, "scale": 1.0, "dropout": 0.0, "keys": keys},
    }
    tensors = {}
    for module, (lora_a, lora_b) in update.pairs.items():
        tensors[f"{module}.lora_a"] = np.ascontiguousarray(lora_a.T)
        tensors[f"{module}.lora_b"] = np.ascontiguousarray(lora_b.T)
    save_file(tensors, str(out_dir / "adapters.safetensors"))
    (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2))


FORMATS: dict[str, Callable[[Update, Path, Base], None]] = {
    "peft": write_peft,
    "gguf": write_gguf,
    "mlx": write_mlx,
}
