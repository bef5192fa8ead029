"""A GGUF file's vocabulary as a Hugging Face tokenizer, without torch.

The training copy of a GGUF model is a whole Hugging Face directory, so it has a
``tokenizer.json``: ``hf_weights.read_config``, which a night and adapter export
call on the copy, refuses a directory without one, and anything that loads the
copy as an HF model (transformers, mlx-lm's ``load``, our converter) reads it.
Neither training backend does: torch and mlx-lm's ``load_model`` read only the
config and weights, and a night tokenizes with the chat engine (llama.cpp). The
tests check that the copy tokenizes as llama.cpp does.

Byte-level BPE vocabularies (``tokenizer.ggml.model`` "gpt2": SmolLM2, Qwen2,
Llama 3) are rebuilt here with ``tokenizers`` the way transformers' GGUF loader
builds them: the file's tokens and merges, its control tokens as special tokens,
the split regex its ``tokenizer.ggml.pre`` names. Other vocabularies
(SentencePiece) go through transformers' own GGUF loader, which needs torch.
"""

from __future__ import annotations

from pathlib import Path

from assistant.errors import ModelError

# Split regexes of byte-level vocabularies by llama.cpp's pre-tokenizer name (as
# transformers maps them); any other name splits with GPT-2's regex.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx"), _LLAMA3_SPLIT),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), _QWEN2_SPLIT),
}
CONTROL, USER_DEFINED = 3, 4  # gguf.TokenType values


def byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of each byte, the alphabet of a byte-level vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    spelling, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            spelling[byte] = chr(byte)
        else:
            spelling[byte] = chr(256 + extra)
            extra += 1
    return spelling


def save_tokenizer(fields: dict, gguf_path: Path, out_dir: Path) -> None:
    """Write the tokenizer files of the vocabulary in ``fields`` (the file's metadata)."""
    kind = fields.get("tokenizer.ggml.model")
    if kind == "gpt2":
        _byte_level(fields).save_pretrained(out_dir)
        return
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as err:
        raise ModelError(
            f"Cannot build a training tokenizer for {gguf_path.name}'s {kind!r} vocabulary"
            f" ({type(err).__name__}: {err}).",
            hint="Byte-level BPE vocabularies convert anywhere; others need transformers"
            " with torch (pip install torch).",
        ) from None
    tokenizer.save_pretrained(out_dir)


def _byte_level(fields: dict):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tokens: list[str] = fields["tokenizer.ggml.tokens"]
    types: list[int] = fields.get("tokenizer.ggml.token_type") or []
    spelling = byte_alphabet()
    alphabet = set(spelling.values())
    # A token written outside the byte alphabet is respelled byte by byte, as transformers does.
    vocab = {
        token if set(token) <= alphabet else "".join(spelling[b] for b in token.encode()): index
        for index, token in enumerate(tokens)
    }
    merges = [tuple(merge.split(" ")) for merge in fields.get("tokenizer.ggml.merges") or []]
    tokenizer = Tokenizer(
        models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="")
    )
    split = SPLITS.get(fields.get("tokenizer.ggml.pre"))
    if split is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tokenizer.decoder = decoders.ByteLevel()
    # A control token spelled outside the byte alphabet is a llama.cpp mislabel: skipped.
    marked = list(zip(tokens, types, strict=False))
    tokenizer.add_special_tokens(
        [
            AddedToken(token, normalized=False, special=True)
            for token, kind in marked
            if kind == CONTROL and set(token) <= alphabet
        ]
    )
    tokenizer.add_tokens(
        [
            AddedToken(token, normalized=False, special=False)
            for token, kind in marked
            if kind == USER_DEFINED and token in vocab
        ]
    )
    ids = {
        name: fields[f"tokenizer.ggml.{key}"]
        for name, key in (
            ("bos_token", "bos_token_id"),
            ("eos_token", "eos_token_id"),
            ("unk_token", "unknown_token_id"),
            ("pad_token", "padding_token_id"),
        )
        if f"tokenizer.ggml.{key}" in fields
    }
    special = {name: tokens[index] for name, index in ids.items()}
    # llama.cpp adds BOS (or EOS) around the text when the file says so: so does the copy.
    bos = special.get("bos_token") if fields.get("tokenizer.ggml.add_bos_token") else None
    eos = special.get("eos_token") if fields.get("tokenizer.ggml.add_eos_token") else None
    ends = {bos: ids.get("bos_token"), eos: ids.get("eos_token")}
    ends = [(token, index) for token, index in ends.items() if token]
    tokenizer.post_processor = TemplateProcessing(
        single=" ".join([*([bos] if bos else []), "$A:0", *([eos] if eos else [])]),
        pair=" ".join(
            [*([bos] if bos else []), "$A:0", *([eos] if eos else [])]
            + [*([f"{bos}:1"] if bos else []), "$B:1", *([f"{eos}:1"] if eos else [])]
        ),
        special_tokens=ends,
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)
    template = fields.get("tokenizer.chat_template")
    if template:
        fast.chat_template = template
    return fast
