"""Write a PEFT LoRA adapter as a GGUF LoRA that llama.cpp applies at run time.

llama.cpp scales each adapter by ``user_scale * adapter.lora.alpha / rank``,
which is PEFT's ``lora_alpha / r``; for rsLoRA (``alpha / sqrt(r)``) the alpha
written is adjusted so both give the same update. Tensor names are the base
tensor's GGUF name plus ``.lora_a`` (PEFT's A, rank x in) and ``.lora_b``
(PEFT's B, out x rank, rows permuted like the base q/k weights).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from assistant.errors import ModelError
from assistant.experts.peft import PeftAdapter
from assistant.models.convert import WeightNames
from assistant.store.private_file import private_file, read_back

_PEFT_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$"
)


def read_peft_adapter(
    adapter: PeftAdapter,
) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Return (adapter_config, {hf_module_name: (A, B)}), each layer checked to have both."""
    config = adapter.config
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"Only LoRA adapters are supported, not {config.get('peft_type')}.")
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, array in adapter.tensors().items():
        match = _PEFT_KEY.match(key)
        if not match:
            raise ModelError(f"Unsupported adapter tensor {key!r} (only Linear LoRA layers).")
        modules.setdefault(match["module"], {})[match["ab"]] = np.asarray(array, np.float32)
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ModelError("Adapters with per-layer rank or alpha patterns are not supported.")
    for module, pair in modules.items():
        if set(pair) != {"A", "B"}:
            raise ModelError(f"Adapter layer {module} lacks its A or B matrix.")
    return config, {module: (pair["A"], pair["B"]) for module, pair in modules.items()}


def gguf_lora(adapter: PeftAdapter, base_config: dict) -> bytes:
    """The adapter as a GGUF LoRA for the base model with ``base_config``, in memory."""
    adapter_config, pairs = read_peft_adapter(adapter)
    # llama.cpp scales by alpha / r: the alpha that makes that PEFT's scaling.
    return gguf_tensors(pairs, adapter.scaling * adapter_config["r"], base_config)


def write_gguf_lora(adapter_dir: Path, base_config: dict, out_path: Path) -> Path:
    """Convert the PEFT adapter folder ``adapter_dir`` into the file ``out_path``."""
    return _write_atomically(out_path, gguf_lora(PeftAdapter.read(adapter_dir), base_config))


def write_gguf_tensors(
    pairs: dict[str, tuple[np.ndarray, np.ndarray]],
    alpha: float,
    base_config: dict,
    out_path: Path,
) -> Path:
    return _write_atomically(out_path, gguf_tensors(pairs, alpha, base_config))


def gguf_tensors(
    pairs: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float, base_config: dict
) -> bytes:
    """{hf_module: (A, B)} as a GGUF LoRA whose update is ``alpha / rank * B @ A``.

    The GGUF writer only writes to a path, so it writes to a private memory file.
    """
    import gguf

    names = WeightNames(base_config)
    with private_file() as path:
        writer = gguf.GGUFWriter(path, names.arch.gguf_name)
        writer.add_string("general.type", "adapter")
        writer.add_string("adapter.type", "lora")
        writer.add_float32("adapter.lora.alpha", alpha)
        for module, (lora_a, lora_b) in sorted(pairs.items()):
            base_name = names.gguf_name(f"{module}.weight")
            writer.add_tensor(f"{base_name}.lora_a", np.ascontiguousarray(lora_a, np.float32))
            lora_b = names.fix_rows(base_name, np.asarray(lora_b, np.float32))
            writer.add_tensor(f"{base_name}.lora_b", np.ascontiguousarray(lora_b))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return read_back(path)


def _write_atomically(out_path: Path, data: bytes) -> Path:
    out_path = Path(out_path)
    partial = out_path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(out_path)
    return out_path
