"""What the torch, Triton and MLX versions of our kernels share: whether Triton can run, and
how many rows of the distillation loss go in one chunk."""

from __future__ import annotations

import importlib.util
import math


def triton_available() -> bool:
    """Triton is installed: its kernels then run on CUDA, or anywhere under its interpreter."""
    return importlib.util.find_spec("triton") is not None


def default_rows_per_chunk(rows: int, width: int, vocabulary: int) -> int:
    """A power of two of rows whose logits are about as large as all the hidden states
    (Liger-Kernel's rule): the loss's memory then grows with the hidden states, not the logits."""
    return 1 << max(0, math.ceil(math.log2(max(1, rows * width // vocabulary))))
