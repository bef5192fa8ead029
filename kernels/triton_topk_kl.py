"""Triton kernel for ``topk_kl``'s in-place step: a chunk's logits to its loss and their gradient.

One program per row: a first pass over the vocabulary finds the row's logsumexp (online, in
fp32), the teacher's k tokens are read from the row, and, when a gradient is wanted, a second
pass overwrites the logits with ``softmax(z)`` and subtracts the teacher's ``p`` at its tokens
(which are distinct, being a top-k: each is written once).
The two vocabulary-wide products around it (logits in, ``d hidden`` out) stay cuBLAS matmuls.

Tested on the CPU under ``TRITON_INTERPRET=1``; compiled for the GPU otherwise. Imported only
when the kernel runs: Triton's import is slow, and it reads ``TRITON_INTERPRET`` as it
defines the kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_V = 1024  # vocabulary entries per step of a row's passes


def loss_and_logit_grad(
    z: torch.Tensor, token_ids: torch.Tensor, teacher: torch.Tensor, want_grad: bool
) -> torch.Tensor:
    """The summed loss of the rows of ``z`` (fp32, contiguous); with ``want_grad``, ``z`` is
    replaced by d loss / d z. ``teacher`` is the renormalised top-k log-probabilities."""
    rows, vocabulary = z.shape
    top_k = token_ids.shape[1]
    losses = torch.empty(rows, dtype=torch.float32, device=z.device)
    loss_and_logit_grad_kernel[(rows,)](
        z, token_ids, teacher, losses,
        vocabulary, top_k,
        z.stride(0), token_ids.stride(0), teacher.stride(0),
        BLOCK_V=min(BLOCK_V, triton.next_power_of_2(vocabulary)),
        BLOCK_K=triton.next_power_of_2(top_k),
        WANT_GRAD=want_grad,
    )  # fmt: skip
    return losses.sum()


@triton.jit
def loss_and_logit_grad_kernel(
    z_ptr, ids_ptr, teacher_ptr, loss_ptr,
    vocabulary, top_k,
    stride_z, stride_ids, stride_teacher,
    BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, WANT_GRAD: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0)
    z_row = z_ptr + row * stride_z
    lanes = tl.arange(0, BLOCK_V)
    # Online logsumexp: the running maximum and the sum of exponentials below it.
    running_max = tl.max(tl.full([BLOCK_V], float("-inf"), tl.float32), axis=0)
    running_sum = tl.sum(tl.zeros([BLOCK_V], tl.float32), axis=0)
    for start in range(0, vocabulary, BLOCK_V):
        z = tl.load(z_row + start + lanes, mask=start + lanes < vocabulary, other=float("-inf"))
        new_max = tl.maximum(running_max, tl.max(z, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(
            tl.exp(z - new_max), axis=0
        )
        running_max = new_max
    lse = running_max + tl.log(running_sum)

    j = tl.arange(0, BLOCK_K)
    taken = j < top_k
    ids = tl.load(ids_ptr + row * stride_ids + j, mask=taken, other=0)
    teacher = tl.load(teacher_ptr + row * stride_teacher + j, mask=taken, other=0.0)
    p = tl.where(taken, tl.exp(teacher), 0.0)
    picked = tl.load(z_row + ids, mask=taken, other=0.0)
    tl.store(loss_ptr + row, tl.sum(p * (teacher - picked), axis=0) + lse)

    if WANT_GRAD:
        for start in range(0, vocabulary, BLOCK_V):
            inside = start + lanes < vocabulary
            z = tl.load(z_row + start + lanes, mask=inside, other=0.0)
            tl.store(z_row + start + lanes, tl.exp(z - lse), mask=inside)
        # The row's softmax was written by all the program's threads: wait for all of them
        # before reading it back at the teacher's tokens (a no-op when interpreted).
        tl.debug_barrier()
        softmax_at_ids = tl.load(z_row + ids, mask=taken, other=0.0)
        tl.store(z_row + ids, softmax_at_ids - p, mask=taken)
