"""Both kernels in MLX, for the MLX backend: the same computations as ``lora_experts`` and
``topk_kl`` (the torch modules hold the definitions and the tests compare against them).

They are written in MLX operations, which MLX compiles for whichever device runs them, Metal
or the CPU. No hand-written Metal kernel (``mx.fast.metal_kernel``) is here: this project's
machines have no Metal to run and test one on.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from assistant.kernels.shared import default_rows_per_chunk


def lora_experts(x: mx.array, a: mx.array, b: mx.array, gates: mx.array) -> mx.array:
    """``sum_e gates_e * (x @ a[e]) @ b[e]`` as one shrink-gate-expand pass.

    x (..., d_in), a (E, d_in, r), b (E, r, d_out), gates (E,). MLX differentiates only what
    the caller asks for, so the frozen experts (held outside the trainable parameters) get no
    gradient.
    """
    experts, inner, rank = a.shape
    shrunk = x @ a.transpose(1, 0, 2).reshape(inner, experts * rank)
    gated = shrunk * mx.repeat(gates, rank)
    return gated @ b.reshape(experts * rank, b.shape[2])


def topk_kl_reference(
    hidden: mx.array, weight: mx.array, token_ids: mx.array, teacher_logprobs: mx.array
) -> mx.array:
    """The loss with the full logits, as ``assistant.kernels.topk_kl.topk_kl_reference``."""
    logits = (hidden @ weight.T).astype(mx.float32)
    student = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    teacher = teacher_logprobs - mx.logsumexp(teacher_logprobs, axis=-1, keepdims=True)
    picked = mx.take_along_axis(student, token_ids, axis=-1)
    return (mx.exp(teacher) * (teacher - picked)).sum()


def topk_kl(
    hidden: mx.array,
    weight: mx.array,
    token_ids: mx.array,
    teacher_logprobs: mx.array,
    rows_per_chunk: int | None = None,
) -> mx.array:
    """The summed KL from the teacher's renormalised top-k to ``softmax(hidden @ weight.T)``,
    a chunk of rows at a time; its gradient flows to ``hidden`` (the output matrix is frozen)."""
    if rows_per_chunk is None:
        rows_per_chunk = default_rows_per_chunk(*hidden.shape, weight.shape[0])
    teacher = teacher_logprobs - mx.logsumexp(teacher_logprobs, axis=-1, keepdims=True)
    return _chunked(weight, rows_per_chunk)(hidden, token_ids, teacher)[0]


def _chunked(weight: mx.array, rows_per_chunk: int):
    """The loss as an MLX custom function: its forward pass also makes ``d loss / d hidden``,
    chunk by chunk, which its backward pass only scales. The output matrix is held here, not
    passed in, so that no (zero) gradient as large as it is ever made."""

    @mx.custom_function
    def loss_and_grad(hidden, token_ids, teacher):
        p = mx.exp(teacher)
        loss = mx.array(0.0)
        grads = []
        for start in range(0, hidden.shape[0], rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            z = (hidden[rows] @ weight.T).astype(mx.float32)
            lse = mx.logsumexp(z, axis=-1, keepdims=True)
            ids = token_ids[rows]
            picked = mx.take_along_axis(z, ids, axis=-1)
            chunk_loss = (p[rows] * (teacher[rows] - picked)).sum() + lse.sum()
            softmax = mx.exp(z - lse)
            # The teacher's k tokens of a row are distinct: put, not add, is exact.
            at_ids = mx.take_along_axis(softmax, ids, axis=-1) - p[rows]
            grad_z = mx.put_along_axis(softmax, ids, at_ids, axis=-1)
            chunk_grad = (grad_z.astype(weight.dtype) @ weight).astype(mx.float32)
            loss = loss + _evaluated(chunk_loss)
            grads.append(_evaluated(chunk_grad))
        return loss, mx.concatenate(grads).astype(hidden.dtype)

    @loss_and_grad.vjp
    def backward(primals, cotangents, outputs):
        _, token_ids, teacher = primals
        return cotangents[0] * outputs[1], mx.zeros_like(token_ids), mx.zeros_like(teacher)

    return loss_and_grad


def _evaluated(chunk: mx.array) -> mx.array:
    """The chunk's float32 result, evaluated and cut from the operations that made it.

    Evaluating each chunk keeps one chunk's logits alive at a time, except under a gradient
    transform: there MLX keeps an evaluated array's inputs for the backward pass (measured:
    every chunk's intermediates, 4x the full logits' size). Through NumPy only the numbers
    stay (``python bench/kernel_speed.py``: peak 3.6 MiB instead of 241 MiB for one sequence).
    """
    return mx.array(np.array(chunk))
