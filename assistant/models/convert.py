"""Our HF -> GGUF converter for the Llama and Qwen2 families, built on ``gguf``.

It writes the hyperparameters llama.cpp reads for these architectures, the
weights renamed with gguf's tensor-name map (q/k rows re-interleaved for
Llama's rotary layout), and the byte-level BPE tokenizer with its special
tokens and chat template. ``quantize`` then calls llama.cpp's own quantizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from assistant.errors import ModelError
from assistant.models.hf_weights import Architecture, architecture_of, iter_weights, source_dtype

# Known pre-tokenizer regexes of byte-level BPE tokenizers, by llama.cpp's name for them.
_QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS = {_QWEN2_REGEX: "qwen2", _LLAMA3_REGEX: "llama-bpe"}

QUANT_TYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15}  # llama_ftype values in llama.h


def permute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """HF Llama keeps each head's rotary pairs as two halves; GGUF interleaves them."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def unpermute_rotary(weights: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``permute_rotary``: GGUF's interleaved rotary pairs back to HF's halves."""
    return (
        weights.reshape(n_head, weights.shape[0] // n_head // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


class WeightNames:
    """Maps HF tensor names to GGUF names and applies the layout changes llama.cpp expects."""

    def __init__(self, config: dict) -> None:
        import gguf

        self.config = config
        self.arch: Architecture = architecture_of(config)
        self.gguf_arch = next(
            a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == self.arch.gguf_name
        )
        self._map = gguf.get_tensor_name_map(self.gguf_arch, config["num_hidden_layers"])

    def gguf_name(self, hf_name: str) -> str | None:
        """GGUF name of an HF tensor, or None for tensors llama.cpp recomputes (rotary cache)."""
        if hf_name.endswith("rotary_emb.inv_freq"):
            return None
        name = self._map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ModelError(f"Don't know where tensor {hf_name!r} goes in GGUF.")
        return name

    def fix_rows(self, gguf_name: str, weights: np.ndarray) -> np.ndarray:
        """Permute the output rows of q/k projections (also a LoRA B matrix) where needed."""
        return self._rows(gguf_name, weights, permute_rotary)

    def unfix_rows(self, gguf_name: str, weights: np.ndarray) -> np.ndarray:
        """Undo ``fix_rows``: a GGUF file's q/k rows back in HF's order."""
        return self._rows(gguf_name, weights, unpermute_rotary)

    def _rows(self, gguf_name: str, weights: np.ndarray, permute) -> np.ndarray:
        if not self.arch.permute_qk:
            return weights
        heads = self.config["num_attention_heads"]
        kv_heads = self.config.get("num_key_value_heads") or heads
        if ".attn_q." in gguf_name:
            return permute(weights, heads)
        if ".attn_k." in gguf_name:
            return permute(weights, kv_heads)
        return weights


def _pre_tokenizer_name(tokenizer_json: dict) -> str:
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if pre.get("type") == "Sequence":
        for step in pre.get("pretokenizers", []):
            regex = (step.get("pattern") or {}).get("Regex")
            if step.get("type") == "Split" and regex in _PRE_TOKENIZERS:
                return _PRE_TOKENIZERS[regex]
    raise ModelError(
        "Unsupported tokenizer: only byte-level BPE tokenizers (GPT-2, Qwen2, Llama 3 style)"
        " can be converted.",
    )


def _write_tokenizer(writer, model_dir: Path, vocab_size: int) -> None:
    import gguf

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text())
    model = tokenizer_json.get("model", {})
    if model.get("type") != "BPE":
        raise ModelError(f"Unsupported tokenizer model {model.get('type')!r}; need BPE.")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["content"]: t for t in tokenizer_json.get("added_tokens", [])}
    for content, token in added.items():
        vocab[content] = token["id"]
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(max(vocab_size, len(vocab))):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            special = added[token].get("special", False)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer)


def _write_hparams(writer, config: dict, file_type: int) -> None:
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_dimension_count(config.get("head_dim") or hidden // heads)
    rope = _rope(config)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    if rope.get("rope_type", rope.get("type")) not in (None, "default"):
        raise ModelError(f"Rope scaling {rope!r} is not supported by our converter yet.")


def _rope(config: dict) -> dict:
    """Rotary settings: ``rope_parameters`` (transformers 5) or the older top-level keys."""
    if config.get("rope_parameters"):
        return dict(config["rope_parameters"])
    rope = dict(config.get("rope_scaling") or {})
    if "rope_theta" in config:
        rope["rope_theta"] = config["rope_theta"]
    return rope


def convert_to_gguf(model_dir: Path, out_path: Path, name: str) -> Path:
    """Write ``out_path`` (F32 for float32 models, F16 otherwise) from an HF directory."""
    import gguf

    from assistant.models.hf_weights import read_config

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    names = WeightNames(config)
    keep_f32 = source_dtype(config) == "float32"
    file_type = gguf.LlamaFileType.ALL_F32 if keep_f32 else gguf.LlamaFileType.MOSTLY_F16
    tmp_path = out_path.with_suffix(".partial")
    writer = gguf.GGUFWriter(tmp_path, names.arch.gguf_name)
    writer.add_name(name)
    _write_hparams(writer, config, file_type)
    _write_tokenizer(writer, model_dir, config["vocab_size"])
    for hf_name, weights in iter_weights(model_dir):
        gguf_name = names.gguf_name(hf_name)
        if gguf_name is None:
            continue
        if config.get("tie_word_embeddings") and gguf_name == "output.weight":
            continue  # llama.cpp reuses token_embd when output is absent
        weights = names.fix_rows(gguf_name, np.asarray(weights, dtype=np.float32))
        if weights.ndim >= 2 and not keep_f32:
            weights = weights.astype(np.float16)
        writer.add_tensor(gguf_name, np.ascontiguousarray(weights))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp_path.replace(out_path)
    return out_path


def quantize(src: Path, dst: Path, quant: str) -> Path:
    """Quantize a GGUF file with llama.cpp's own quantizer (one of ``QUANT_TYPES``)."""
    import ctypes

    import llama_cpp

    if quant not in QUANT_TYPES:
        raise ModelError(f"Unknown quantization {quant!r}; choose {', '.join(QUANT_TYPES)}.")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[quant]
    tmp = dst.with_suffix(".partial")
    status = llama_cpp.llama_model_quantize(
        str(src).encode(), str(tmp).encode(), ctypes.byref(params)
    )
    if status != 0:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"llama.cpp could not quantize {src.name} to {quant} (status {status}).")
    tmp.replace(dst)
    return dst
