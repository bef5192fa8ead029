"""LoRA updates as plain arrays: fold scales in, merge experts exactly, compress by SVD.

An update of one linear layer is ``B @ A`` (B: out x r, A: r x in) with every
scale already folded into B, so a merged adapter is applied with scaling 1.
Experts add up, so their merge is exact: ranks concatenated,
``[s1 B1 | s2 B2] @ [A1; A2] = s1 B1 A1 + s2 B2 A2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from assistant.experts.lora_gguf import read_peft_adapter
from assistant.experts.peft import PeftAdapter


@dataclass
class Update:
    """{hf_module_name: (A, B)}, one shared rank, applied with scaling 1."""

    pairs: dict[str, tuple[np.ndarray, np.ndarray]]
    # Compression only: each layer's relative Frobenius error, ||dW - dW_r|| / ||dW||.
    errors: dict[str, float] = field(default_factory=dict)

    @property
    def rank(self) -> int:
        return next(iter(self.pairs.values()))[0].shape[0] if self.pairs else 0

    def delta(self, module: str) -> np.ndarray:
        lora_a, lora_b = self.pairs[module]
        return lora_b.astype(np.float64) @ lora_a.astype(np.float64)


def read_update(adapter: PeftAdapter, scale: float = 1.0) -> Update:
    """A PEFT adapter with its own scaling and ``scale`` (the expert's) folded into B."""
    _, pairs = read_peft_adapter(adapter)
    factor = np.float32(adapter.scaling * scale)
    return Update({module: (a, b * factor) for module, (a, b) in pairs.items()})


def merge(updates: Sequence[Update], shapes: dict[str, tuple[int, ...]]) -> Update:
    """One update equal to the sum of ``updates``; layers one of them lacks get zero blocks.

    ``shapes`` maps each base module to its weight's (out, in). Every module of a
    kind any update adapts (``q_proj``, ...) is in the result, in every layer.
    """
    kinds = {module.rsplit(".", 1)[-1] for update in updates for module in update.pairs}
    modules = sorted(m for m in shapes if m.rsplit(".", 1)[-1] in kinds)
    pairs = {}
    for module in modules:
        out_dim, in_dim = shapes[module]
        blocks_a, blocks_b = [], []
        for update in updates:
            a, b = update.pairs.get(module) or (
                np.zeros((update.rank, in_dim), np.float32),
                np.zeros((out_dim, update.rank), np.float32),
            )
            blocks_a.append(a)
            blocks_b.append(b)
        pairs[module] = (np.concatenate(blocks_a, 0), np.concatenate(blocks_b, 1))
    return Update(pairs)


def compress(update: Update, rank: int) -> Update:
    """The best rank-``rank`` approximation of each layer (truncated SVD), with its error.

    ``B @ A`` is factored through QR of B and A^T, so only an r x r matrix is
    decomposed; the dropped singular values give the error exactly.
    """
    pairs, errors = {}, {}
    for module, (lora_a, lora_b) in update.pairs.items():
        q_b, r_b = np.linalg.qr(lora_b.astype(np.float64))
        q_a, r_a = np.linalg.qr(lora_a.T.astype(np.float64))
        u, singular, vt = np.linalg.svd(r_b @ r_a.T)
        kept = min(rank, len(singular))
        root = np.sqrt(singular[:kept])
        new_b = np.zeros((lora_b.shape[0], rank))
        new_a = np.zeros((rank, lora_a.shape[1]))
        new_b[:, :kept] = (q_b @ u[:, :kept]) * root
        new_a[:kept] = (root[:, None] * vt[:kept]) @ q_a.T
        pairs[module] = (new_a.astype(np.float32), new_b.astype(np.float32))
        total = float(np.sum(singular**2))
        errors[module] = math.sqrt(float(np.sum(singular[kept:] ** 2)) / total) if total else 0.0
    return Update(pairs, errors)
