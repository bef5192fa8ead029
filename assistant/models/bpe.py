"""Train a byte-level BPE tokenizer and save it as a Hugging Face tokenizer directory.

Used for models built on this machine (the tiny test models, benchmark models);
the chat template is the ChatML layout the engine falls back to.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from assistant.engine import FALLBACK_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: Iterable[str], out_dir: Path, vocab_size: int):
    """Return a ``PreTrainedTokenizerFast`` trained on ``texts`` and saved to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = FALLBACK_CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast
