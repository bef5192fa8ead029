"""The distillation loss without the batch's full-vocabulary logits (torch).

The loss is the KL divergence from the teacher's top-k distribution (renormalised over its k
tokens) to the student's, summed over answer positions, where the student's logits are
``hidden @ weight.T``. For the starter, the plain way builds (tokens x 49,152) logits, their
log-softmax and its gradient for the whole batch: most of a night's training memory.

Here the rows go a chunk at a time (Liger-Kernel's fused linear cross-entropy is the model):
each chunk's logits are made, turned in place into the loss and the gradient of the logits
(``softmax(z) - p`` at the teacher's tokens), multiplied back into ``d hidden`` and dropped,
all in the forward pass; the backward pass only scales the stored gradient. With a teacher
distribution ``p`` that sums to one, a row's loss is
``sum_j p_j (log p_j - z[id_j]) + logsumexp(z)``. On CUDA the in-place step is a Triton
kernel (``triton_topk_kl``), elsewhere torch operations.
"""

from __future__ import annotations

import torch

from assistant.kernels.shared import default_rows_per_chunk, triton_available


def topk_kl_reference(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
) -> torch.Tensor:
    """The definition, with the full logits: summed KL(teacher top-k || student)."""
    student = torch.log_softmax((hidden @ weight.t()).float(), dim=-1)
    teacher = torch.log_softmax(teacher_logprobs.float(), dim=-1)
    return (teacher.exp() * (teacher - student.gather(-1, token_ids))).sum()


def topk_kl(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    *,
    rows_per_chunk: int | None = None,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """``topk_kl_reference``'s value and gradients, a chunk of rows at a time.

    hidden (N, d), weight (V, d), token_ids (N, k) int64, teacher_logprobs (N, k).
    ``rows_per_chunk``: None sizes a chunk's logits like the hidden states (Liger's rule).
    ``use_triton``: None picks Triton when ``hidden`` is on CUDA and Triton is installed.
    """
    if use_triton is None:
        use_triton = hidden.is_cuda and triton_available()
    if rows_per_chunk is None:
        rows_per_chunk = default_rows_per_chunk(*hidden.shape, weight.shape[0])
    # Inside an autograd function grad mode is off: whether gradients are wanted is read here.
    wanted = torch.is_grad_enabled()
    return _TopkKl.apply(
        hidden, weight, token_ids, teacher_logprobs, rows_per_chunk, use_triton, wanted
    )


def _loss_and_logit_grad(z, token_ids, teacher, want_grad: bool, use_triton: bool):
    """A chunk's summed loss; with ``want_grad``, ``z`` becomes d loss / d z in place."""
    if use_triton:
        from assistant.kernels import triton_topk_kl

        return triton_topk_kl.loss_and_logit_grad(z, token_ids, teacher, want_grad)
    lse = torch.logsumexp(z, dim=-1)
    p = teacher.exp()
    loss = (p * (teacher - z.gather(-1, token_ids))).sum() + lse.sum()
    if want_grad:
        z.sub_(lse.unsqueeze(-1)).exp_().scatter_add_(-1, token_ids, -p)
    return loss


class _TopkKl(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, hidden, weight, token_ids, teacher_logprobs, rows_per_chunk, use_triton, wanted
    ):
        want_hidden = ctx.needs_input_grad[0] and wanted
        want_weight = ctx.needs_input_grad[1] and wanted
        teacher = torch.log_softmax(teacher_logprobs.float(), dim=-1)
        grad_hidden = torch.zeros_like(hidden) if want_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if want_weight else None
        loss = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], rows_per_chunk):
            rows = slice(start, start + rows_per_chunk)
            h = hidden[rows]
            z = (h @ weight.t()).float()
            loss += _loss_and_logit_grad(
                z, token_ids[rows], teacher[rows], want_hidden or want_weight, use_triton
            )
            if want_hidden:
                grad_hidden[rows] = (z.to(weight.dtype) @ weight).to(hidden.dtype)
            if want_weight:
                grad_weight += z.t() @ h.float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        scaled_hidden = None if grad_hidden is None else grad_hidden * grad_loss
        scaled_weight = None
        if grad_weight is not None:
            scaled_weight = (grad_weight * grad_loss).to(ctx.weight_dtype)
        return scaled_hidden, scaled_weight, None, None, None, None, None
