"""Train the demo model: a BPE tokenizer and a small Llama, on the CPU, from a seed.

The loop is deliberately plain (nanoGPT-style): batches of transcripts of
similar length, loss on the assistant's turns only, AdamW with warmup and
cosine decay, bf16 autocast where the CPU supports it. Before the corpus, a
copy warm-up must teach the model to copy from its context, or the build stops
there: a model that cannot read its notes is never used.
The result is a normal Hugging Face directory that the model registry treats
like any other model.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import fmean
from typing import NamedTuple

from assistant.bpe import SPECIAL_TOKENS, train_tokenizer
from assistant.demo.corpus import (
    IGNORE,
    encode_transcript,
    render_message,
    transcripts,
)
from assistant.errors import ModelError
from assistant.hardware import cpu_flags

WARM_UP, CORPUS, COPY = "warm-up", "corpus", "copy"  # a step's phase
_FIRST_COPY_TOKEN = 8  # copy rows avoid the special tokens
_COPY_ALPHABETS = (16, 64, 256, 0)  # distinct tokens a copied sequence uses (0: any)
# A build whose copy batches still cost this much at the end cannot read from its context (a
# working one ends near 0.1, a failed one near ln V): it fails rather than being used.
MAX_FINAL_COPY_LOSS = 1.0
# A cached build is reused only if these sources (the corpus and how it is trained) are unchanged.
_BUILD_SOURCES = ("demo/facts.py", "demo/corpus.py", "demo/training.py", "prompting.py", "bpe.py")
_RECIPE_HINT = "The recipe in assistant/demo/training.py needs work for this DemoConfig."


@dataclass(frozen=True)
class DemoConfig:
    seed: int = 1234
    vocab_size: int = 4096
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 352
    context: int = 1024  # positions the model supports (the engine clamps n_ctx to this)
    max_tokens: int = 768  # longest training transcript
    steps: int = 2000  # corpus steps, after the copy warm-up
    batch_tokens: int = 2048
    learning_rate: float = 8e-3
    warmup_steps: int = 100
    tokenizer_transcripts: int = 4000
    # Copy warm-up before the corpus: random token sequences repeated once, in rows growing
    # to 512 tokens ((until step, row tokens) pairs). It forms the induction heads reading
    # from context needs; on the corpus alone they do not form within the CPU budget.
    copy_schedule: tuple[tuple[int, int], ...] = (
        (300, 32),
        (500, 64),
        (700, 128),
        (900, 256),
        (1100, 512),
    )
    copy_learning_rate: float = 2e-3
    # Copying forms at a step that depends on the initial weights, and the corpus erases a
    # half-formed copy skill for good: a warm-up whose copy loss (mean of its last 50 steps)
    # is still above this stops the build before the corpus.
    copy_formed_loss: float = 0.5
    copy_every: int = 4  # afterwards, every n-th batch is still a copy batch (0: none)

    @property
    def warm_up_steps(self) -> int:
        return self.copy_schedule[-1][0] if self.copy_schedule else 0

    @property
    def longest_copy_row(self) -> int:
        return self.copy_schedule[-1][1] if self.copy_schedule else 0

    @property
    def key(self) -> str:
        """Names the cached build: changes with the config or the corpus generator."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode())
        package = Path(__file__).resolve().parent.parent
        for name in _BUILD_SOURCES:
            digest.update((package / name).read_bytes())
        return digest.hexdigest()[:12]


PRESETS = {
    "full": DemoConfig(),
    # Trains in well under a minute: for tests and for trying the product quickly.
    "tiny": DemoConfig(
        vocab_size=1024,
        hidden_size=64,
        layers=2,
        heads=2,
        intermediate_size=176,
        max_tokens=512,
        steps=100,
        batch_tokens=4096,
        learning_rate=3e-3,
        warmup_steps=5,
        tokenizer_transcripts=400,
        copy_schedule=(),
        copy_every=0,
    ),
}


@dataclass
class TrainingReport:
    config: dict
    parameters: int
    steps: int
    seconds: float
    tokens_seen: int
    first_loss: float
    final_loss: float  # corpus batches: mean of the last 10%
    final_copy_loss: float | None  # copy batches mixed into the corpus: mean of the last 10%


Progress = Callable[[int, int, float], None]


def batches(tokenizer, config: DemoConfig, seed: int) -> Iterator[tuple[list, list]]:
    """Batches of similar-length transcripts, each at most ``batch_tokens`` padded tokens."""
    rng = random.Random(seed)
    stream = transcripts(seed)
    pad = tokenizer.pad_token_id

    def tokenize(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    while True:
        encoded = [encode_transcript(tokenize, next(stream), config.max_tokens) for _ in range(256)]
        encoded = sorted((e for e in encoded if e), key=lambda e: len(e[0]))
        chunk: list[list[tuple[list[int], list[int]]]] = [[]]
        for item in encoded:
            if (len(chunk[-1]) + 1) * len(item[0]) > config.batch_tokens:
                chunk.append([])
            chunk[-1].append(item)
        rng.shuffle(chunk)
        for group in chunk:
            width = max(len(ids) for ids, _ in group)
            yield (
                [ids + [pad] * (width - len(ids)) for ids, _ in group],
                [labels + [IGNORE] * (width - len(labels)) for _, labels in group],
            )


def copy_batch(
    rng: random.Random, vocab_size: int, row_tokens: int, batch_tokens: int
) -> tuple[list, list]:
    """Rows of random sequences each followed by a copy of itself, the loss on the copies.

    The halves are marked with ``<|im_start|>`` and ``<|im_end|>``; the random tokens
    are drawn from past the special tokens. Most sequences use a small alphabet, so a
    token recurs within them and the next one is found only by matching the tokens
    before it too: what copying a name split into common pieces ("Muff|in") needs.
    """
    start, end = SPECIAL_TOKENS.index("<|im_start|>"), SPECIAL_TOKENS.index("<|im_end|>")
    rows, targets = [], []
    for _ in range(max(1, batch_tokens // row_tokens)):
        row: list[int] = []
        target: list[int] = []
        while len(row) < row_tokens:
            length = rng.randint(5, min(60, row_tokens // 2 - 2))
            tokens = range(_FIRST_COPY_TOKEN, vocab_size)
            alphabet = rng.choice(_COPY_ALPHABETS)
            letters = rng.sample(tokens, alphabet) if alphabet else tokens
            sequence = [rng.choice(letters) for _ in range(length)]
            row += [*sequence, start, *sequence, end]
            target += [IGNORE] * (length + 1) + [*sequence, end]
        rows.append(row[:row_tokens])
        targets.append(target[:row_tokens])
    return rows, targets


class Step(NamedTuple):
    batch: tuple[list, list]  # (token ids, labels), rows padded to one width
    learning_rate: float
    phase: str  # "warm-up" (copy batches), then "corpus" or "copy" (mixed into the corpus)


def warm_up_schedule(
    config: DemoConfig, vocab_size: int, copy_rng: random.Random
) -> Iterator[Step]:
    """The copy warm-up: copy batches in rows growing to the longest, at a gentle rate."""
    step = 0
    for until, row_tokens in config.copy_schedule:
        while step < until:
            rate = config.copy_learning_rate * min(1.0, (step + 1) / 50)
            yield Step(
                copy_batch(copy_rng, vocab_size, row_tokens, config.batch_tokens),
                rate,
                WARM_UP,
            )
            step += 1


def corpus_schedule(tokenizer, config: DemoConfig, copy_rng: random.Random) -> Iterator[Step]:
    """The corpus with its warmup and cosine decay, every ``copy_every``-th batch a copy batch."""
    vocab_size = len(tokenizer)
    data = batches(tokenizer, config, config.seed + 1)
    for step in range(config.steps):
        rate = _learning_rate(config, step)
        if config.copy_every and step % config.copy_every == config.copy_every - 1:
            yield Step(
                copy_batch(copy_rng, vocab_size, config.longest_copy_row, config.batch_tokens),
                rate,
                COPY,
            )
        else:
            yield Step(next(data), rate, CORPUS)


def _learning_rate(config: DemoConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_demo_model(
    config: DemoConfig, out_dir: Path, progress: Progress = lambda *_: None
) -> TrainingReport:
    """Build the tokenizer and the model into ``out_dir`` (a Hugging Face directory)."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = transcripts(config.seed)
    sample = [
        "".join(render_message(m) for m in next(corpus))
        for _ in range(config.tokenizer_transcripts)
    ]
    tokenizer = train_tokenizer(sample, out_dir, config.vocab_size)
    _write_tokenizer_flags(out_dir)

    # bf16 autocast pays off only with native bf16 matmuls (AMX / AVX512-BF16).
    use_bf16 = bool({"amx_bf16", "avx512_bf16"} & cpu_flags())
    losses: dict[str, list[float]] = {WARM_UP: [], CORPUS: [], COPY: []}
    done, tokens_seen = 0, 0

    model, optimizer = _new_model(config, tokenizer)
    total = config.warm_up_steps + config.steps

    def train(steps: Iterator[Step]) -> None:
        nonlocal done, tokens_seen
        for batch, learning_rate, phase in steps:
            loss = _train_step(model, optimizer, batch, learning_rate, use_bf16)
            losses[phase].append(loss)
            done, tokens_seen = done + 1, tokens_seen + len(batch[0]) * len(batch[0][0])
            progress(done, total, loss)

    copy_rng = random.Random(config.seed + 2)
    train(warm_up_schedule(config, len(tokenizer), copy_rng))
    warm_up_loss = fmean(losses[WARM_UP][-50:]) if losses[WARM_UP] else 0.0
    if warm_up_loss > config.copy_formed_loss:
        raise ModelError(
            f"The demo model did not learn to read from its context: the copy warm-up ended"
            f" at copy loss {warm_up_loss:.2f}, above"
            f" {config.copy_formed_loss}, so the build stopped before the corpus.",
            hint=_RECIPE_HINT,
        )
    train(corpus_schedule(tokenizer, config, copy_rng))

    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    report = TrainingReport(
        config=asdict(config),
        parameters=sum(p.numel() for p in model.parameters()),
        steps=done,
        seconds=round(time.perf_counter() - started, 1),
        tokens_seen=tokens_seen,
        first_loss=(losses[WARM_UP] or losses[CORPUS])[0],
        final_loss=_tail_mean(losses[CORPUS]),
        final_copy_loss=_tail_mean(losses[COPY]) if losses[COPY] else None,
    )
    (out_dir / "training.json").write_text(json.dumps(asdict(report), indent=2))
    if report.final_copy_loss is not None and report.final_copy_loss > MAX_FINAL_COPY_LOSS:
        raise ModelError(
            f"The demo model did not learn to read from its context (copy loss"
            f" {report.final_copy_loss:.2f} at the end, a working build ends below"
            f" {MAX_FINAL_COPY_LOSS}), so it is not used.",
            hint=f"Its training log is {out_dir / 'training.json'}. {_RECIPE_HINT}",
        )
    return report


def _new_model(config: DemoConfig, tokenizer):
    """A freshly initialised Llama (weights from the config's seed) and its optimizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            num_key_value_heads=config.heads,
            max_position_embeddings=config.context,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.1
    )
    return model, optimizer


def _train_step(model, optimizer, batch: tuple[list, list], learning_rate: float, bf16: bool):
    """One AdamW step on a batch; returns its loss."""
    import torch

    ids, labels = (torch.tensor(t) for t in batch)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = _assistant_loss(model, ids, labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def _tail_mean(values: list[float]) -> float:
    """Mean of the last 10%: one batch's loss is noisy."""
    return fmean(values[-max(1, len(values) // 10) :])


def _assistant_loss(model, ids, labels):
    """Cross-entropy on the assistant's tokens only, projecting just those to the vocabulary.

    Most positions are context (notes, questions), so skipping their output
    projection saves a sixth of the step without changing the loss.
    """
    import torch.nn.functional as F

    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.lm_head(hidden[keep])
    return F.cross_entropy(logits.float(), targets[keep])


def _write_tokenizer_flags(out_dir: Path) -> None:
    """No BOS token: transcripts start with ``<|im_start|>``, in training and in llama.cpp."""
    path = out_dir / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings.update(add_bos_token=False, add_eos_token=False)
    path.write_text(json.dumps(settings, indent=2))
