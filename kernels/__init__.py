"""Our own kernels (DESIGN.md section 10): the two hot spots of a night's training.

- ``lora_experts``: all LoRA experts of a linear layer in one shrink-gate-expand pass.
- ``topk_kl``: the distillation loss from hidden states and the output matrix, a chunk of rows
  at a time, so the full-vocabulary logits of the whole batch never exist at once.

Each has a plain torch reference (the definition the tests hold it to), a fused torch version
(an autograd function), a Triton version of its inner loops (``triton_lora``,
``triton_topk_kl``; CUDA, or the CPU under ``TRITON_INTERPRET=1``) and an MLX version
(``mlx_ops``). The config's ``sleep_kernels`` turns them on: the torch backend decides in
``use_kernels``; the MLX backend takes the chunked loss with ``on``.
"""

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
