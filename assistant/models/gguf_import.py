"""GGUF files as models: checked before they are registered, dequantized once for training.

Chat runs a GGUF file as it is (quantized or not). Training needs a Hugging Face
directory of float32 weights, which torch and MLX both load. It is built here
with numpy, gguf's dequantizer and safetensors, no torch (Apple silicon trains
with MLX and has none): the config from the metadata (the keys transformers'
GGUF loader reads), the weights dequantized and renamed with gguf's tensor-name
map, llama.cpp's rotary q/k row order undone, the tokenizer and chat template
from the file (``gguf_tokenizer``). Experts trained on that copy are applied to
the quantized file in chat. A file whose rotary embedding is scaled (Llama 3.1's
``rope_freqs`` tensor, a yarn or linear factor) is refused for training: the
config written here has no scaling, so the copy would not compute what chat runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from assistant.errors import ModelError
from assistant.models.gguf_header import read_header

# GGUF architecture -> the Hugging Face class training loads.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def gguf_facts(path: Path) -> tuple[str, str]:
    """(HF architecture, file type such as ``q4_1``) of a GGUF file we can chat with and train.

    Refuses, with a one-line reason, anything that is not a whole GGUF file of a
    supported architecture whose tensors can be dequantized.
    """
    import gguf

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"No such file: {path}")
    try:
        header = read_header(path)
        truncated = header.data_end() > header.file_size
    except ValueError as err:
        raise ModelError(
            f"{path.name} is not a readable GGUF file ({err}).",
            hint="The file may be cut short or not a GGUF model; download it again.",
        ) from None
    if truncated:
        raise ModelError(
            f"{path.name} is not a readable GGUF file (its tensor data is cut short).",
            hint="The download may have stopped early; download it again.",
        )
    arch = header.fields.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(
            f"{path.name} is a {arch or 'unnamed'} model; supported are"
            f" {', '.join(sorted(ARCHITECTURES))} (Llama and Qwen2 families).",
        )
    readable = dequantizable_types()
    unsupported = sorted(
        {gguf.GGMLQuantizationType(t.type).name for t in header.tensors}
        - {t.name for t in readable}
    )
    if unsupported:
        raise ModelError(f"{path.name} holds tensors of types we cannot dequantize: {unsupported}.")
    file_type = header.fields.get("general.file_type")
    if file_type is None:
        return ARCHITECTURES[arch], "unknown"
    try:
        name = gguf.LlamaFileType(int(file_type)).name
    except ValueError:  # a file type llama.cpp no longer names (Q4_1_SOME_F16 and the like)
        return ARCHITECTURES[arch], "unknown"
    return ARCHITECTURES[arch], name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def dequantizable_types() -> set:
    """The tensor types gguf's own numpy dequantizer reads."""
    import gguf
    from gguf import quants

    types = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16}
    types |= {
        qtype
        for qtype in gguf.GGMLQuantizationType
        if getattr(quants, qtype.name, None) is not None or qtype.name == "BF16"
    }
    return types


# Written into a training copy: which file it was made from, so a changed file is redone.
_SOURCE_FILE = "gguf-source.json"


def _source_stamp(gguf_path: Path) -> dict:
    stat = gguf_path.stat()
    return {"path": str(gguf_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def copy_is_current(gguf_path: Path, hf_dir: Path) -> bool:
    """Whether ``hf_dir`` is a whole training copy of the file as it is now."""
    try:
        stamp = json.loads((Path(hf_dir) / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stamp == _source_stamp(Path(gguf_path)) and (Path(hf_dir) / "config.json").is_file()


def dequantize_to_hf(
    gguf_path: Path, out_dir: Path, progress: Callable[[str], None] = lambda _: None
) -> Path:
    """Write ``out_dir``: a float32 Hugging Face copy of ``gguf_path`` that training loads.

    Built in a partial directory renamed at the end (and removed if anything fails), so an
    interrupted copy is redone; stamped with the file's size and time, so a changed file is
    copied again. The tokenizer is built before the weights are dequantized: it is what can
    fail (a SentencePiece vocabulary without torch), and then it fails at once.
    """
    import gguf
    from safetensors.numpy import save_file

    from assistant.models.gguf_tokenizer import save_tokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        reader = gguf.GGUFReader(gguf_path)
    except (ValueError, OSError) as err:
        raise ModelError(f"{gguf_path.name} is not a readable GGUF file ({err}).") from None
    fields = {name: _field_value(field) for name, field in reader.fields.items()}
    tensor_names = [t.name for t in reader.tensors]
    _refuse_rope_scaling(gguf_path.name, fields, tensor_names)
    config = hf_config(fields, tensor_names)
    progress(f"dequantizing {gguf_path.name} for training (once)")
    partial.mkdir(parents=True)
    try:
        save_tokenizer(fields, gguf_path, partial)
        _save_config(config, partial)
        # What transformers' save_pretrained writes: every tensor float32, tied ones once.
        save_file(_hf_weights(reader, config), partial / "model.safetensors", {"format": "pt"})
        (partial / _SOURCE_FILE).write_text(json.dumps(_source_stamp(gguf_path)))
        shutil.rmtree(out_dir, ignore_errors=True)
        partial.rename(out_dir)
    except BaseException:  # an error, or Ctrl-C: no half-made copy left behind
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def _refuse_rope_scaling(file_name: str, fields: dict, tensor_names: list[str]) -> None:
    """Refuse a model whose rotary embedding is scaled: chat (llama.cpp) applies the scaling,
    the HF config written here would not, so what sleep trained would not be what chat runs.

    Llama 3.1 and later carry it as a ``rope_freqs`` tensor (per-frequency factors llama.cpp
    multiplies in); other files name a scaling type (linear, yarn) in the metadata.
    """
    arch = fields.get("general.architecture")
    scaling = fields.get(f"{arch}.rope.scaling.type")
    factor = fields.get(f"{arch}.rope.scaling.factor")
    if "rope_freqs.weight" in tensor_names:
        how = "per-frequency factors (a rope_freqs tensor, as Llama 3.1 and later carry)"
    elif scaling not in (None, "none") and factor not in (None, 0.0, 1.0):
        how = f"{scaling} scaling by {factor:g}"
    else:
        return
    raise ModelError(
        f"{file_name}'s rope scaling ({how}) cannot be trained yet: a training copy would"
        " not compute what chat runs, so the assistant chats with this model but cannot"
        " learn into it.",
        hint="For sleep to learn, use a model without rope scaling (SmolLM2, Qwen2.5, Llama 3.0).",
    )


def _field_value(field) -> object:
    """A metadata field as Python: a scalar, a string, or a list of either."""
    import gguf

    def one(index: int, kind) -> object:
        part = field.parts[index]
        if kind == gguf.GGUFValueType.STRING:
            return bytes(part).decode("utf-8", errors="replace")
        if kind == gguf.GGUFValueType.BOOL:
            return bool(part[0])
        if kind in (gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64):
            return float(part[0])
        return int(part[0])

    if field.types[0] == gguf.GGUFValueType.ARRAY:
        return [one(index, field.types[-1]) for index in field.data]
    return one(field.data[0], field.types[0])


# GGUF metadata key (after "<architecture>.") -> HF config key, as transformers reads them.
_CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.dimension_count": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}
_TOKEN_KEYS = {
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "unknown_token_id": "unk_token_id",
    "padding_token_id": "pad_token_id",
}


def hf_config(fields: dict, tensor_names: list[str]) -> dict:
    """The HF config (as keyword arguments of its config class) a GGUF file's metadata says."""
    arch = fields.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(f"Cannot train a {arch or 'unnamed'} model; supported: llama, qwen2.")
    config: dict = {
        "model_type": arch,
        "architectures": [ARCHITECTURES[arch]],
        # Without an output matrix, llama.cpp reuses the embeddings.
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    if "general.name" in fields:
        config["_model_name_or_path"] = fields["general.name"]
    for key, name in _CONFIG_KEYS.items():
        if f"{arch}.{key}" in fields and not (arch == "qwen2" and name == "head_dim"):
            config[name] = fields[f"{arch}.{key}"]
    for key, name in _TOKEN_KEYS.items():
        if f"tokenizer.ggml.{key}" in fields:
            config[name] = fields[f"tokenizer.ggml.{key}"]
    config.setdefault("vocab_size", len(fields.get("tokenizer.ggml.tokens") or []))
    return config


def _save_config(config: dict, out_dir: Path) -> None:
    """config.json and generation_config.json through transformers' classes (no torch)."""
    import transformers
    from transformers import AutoConfig, GenerationConfig

    settings = dict(config)
    hf = AutoConfig.for_model(settings.pop("model_type"), **settings)
    newer = int(transformers.__version__.split(".")[0]) >= 5
    setattr(hf, "dtype" if newer else "torch_dtype", "float32")
    hf.save_pretrained(out_dir)
    GenerationConfig.from_model_config(hf).save_pretrained(out_dir)


def _hf_weights(reader, config: dict) -> dict:
    """Every tensor dequantized to float32 under its HF name, q/k rows back in HF's order."""
    import gguf
    import numpy as np

    from assistant.models.convert import WeightNames

    names = WeightNames(config)
    to_hf = {names.gguf_name(name): name for name in _hf_names(config)}
    weights = {}
    for tensor in reader.tensors:
        name = to_hf.get(tensor.name)
        if name is None:
            continue  # what the HF model lacks (rope_freqs is refused before)
        array = np.asarray(gguf.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        array = array.reshape(tuple(reversed([int(d) for d in tensor.shape])))
        weights[name] = np.ascontiguousarray(names.unfix_rows(tensor.name, array))
    missing = sorted(set(to_hf.values()) - set(weights))
    if missing:
        raise ModelError(f"The GGUF file lacks tensors the model needs: {missing[:3]}.")
    return weights


def _hf_names(config: dict) -> list[str]:
    """The HF parameter names of a Llama or Qwen2 model of this shape."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not config["tie_word_embeddings"]:
        names.append("lm_head.weight")
    biases = config["model_type"] == "qwen2"
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        names += [f"{layer}.input_layernorm.weight", f"{layer}.post_attention_layernorm.weight"]
        for proj in ("q", "k", "v", "o"):
            names.append(f"{layer}.self_attn.{proj}_proj.weight")
            if biases and proj != "o":
                names.append(f"{layer}.self_attn.{proj}_proj.bias")
        names += [f"{layer}.mlp.{proj}_proj.weight" for proj in ("gate", "up", "down")]
    return names
