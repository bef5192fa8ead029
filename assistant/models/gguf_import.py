"""GGUF files as models: checked before they are registered, dequantized once for training.

Chat runs a GGUF file as it is (quantized or not). Training needs a Hugging Face
directory of float32 weights; transformers' own GGUF loader builds it (config from
the metadata, weights dequantized with llama.cpp's rotary q/k row order undone,
tokenizer and chat template from the file). Experts trained on that copy are
applied to the quantized file in chat.
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
    """The tensor types gguf's own numpy dequantizer reads (what transformers uses)."""
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

    Built in a partial directory renamed at the end, so an interrupted copy is redone;
    stamped with the file's size and time, so a changed file is copied again.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    progress(f"dequantizing {gguf_path.name} for training (once)")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        source = dict(pretrained_model_name_or_path=gguf_path.parent, gguf_file=gguf_path.name)
        tokenizer = AutoTokenizer.from_pretrained(**source)
        model = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
    except Exception as err:
        raise ModelError(
            f"transformers could not load {gguf_path.name} ({type(err).__name__}: {err})."
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    # The loader marks the model as coming from a quantizer; the weights are plain fp32 now.
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / _SOURCE_FILE).write_text(json.dumps(_source_stamp(gguf_path)))
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir
