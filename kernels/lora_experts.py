"""All LoRA experts of one linear layer in one shrink-gate-expand pass (torch).

Every active expert ``e`` adds ``gate_e * (x @ A_e) @ B_e`` to the layer's output.
Stacked, that is two matrix products whatever the number of experts:

- shrink: ``h = x @ [A_1 .. A_E]`` and gate it, ``h_e *= gate_e`` (a scale per expert, or a
  router's per-token gates);
- expand: ``y = h @ [B_1; ..; B_E]`` (the experts' ranks are the inner dimension).

The backward pass is the same two products on the transposed stacks (for ``dx``), plus the
gradient of the one trainable expert: the frozen experts never get one.

Layout (vLLM's stacked LoRA layout): ``a`` is (E, d_in, r), ``b`` is (E, r, d_out); experts of
a smaller rank are zero-padded to the largest (which changes nothing). ``gates`` is (E,) or
(T, E). On CUDA the two products run as Triton kernels (``triton_lora``), elsewhere as torch
matmuls on the stacks.
"""

from __future__ import annotations

import torch

from assistant.kernels.shared import triton_available


def lora_experts_reference(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gates: torch.Tensor
) -> torch.Tensor:
    """The definition, one expert at a time (what PEFT computes): the fused pass must match it."""
    per_token = gates if gates.dim() == 2 else gates.expand(x.shape[0], -1)
    out = x.new_zeros(x.shape[0], b.shape[2])
    for e in range(a.shape[0]):
        out = out + per_token[:, e : e + 1] * ((x @ a[e]) @ b[e])
    return out


def lora_experts(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    gates: torch.Tensor,
    trainable: int | None = None,
    *,
    use_triton: bool | None = None,
) -> torch.Tensor:
    """``sum_e gates_e * (x @ a[e]) @ b[e]`` for x (T, d_in), fused; only ``a[trainable]`` and
    ``b[trainable]`` get gradients (the rest of ``a`` and ``b`` gets zeros), ``gates`` none.

    ``use_triton``: None picks Triton when ``x`` is on CUDA and Triton is installed.
    """
    if use_triton is None:
        use_triton = x.is_cuda and triton_available()
    return _LoraExperts.apply(x, a, b, gates, trainable, use_triton)


def _shrink(x, w, gates, use_triton: bool):
    """(T, K) x (E, K, R) -> (T, E, R), each expert's slice times its gate."""
    if use_triton:
        from assistant.kernels import triton_lora

        return triton_lora.shrink(x, w, gates)
    experts, inner, rank = w.shape
    h = (x @ w.permute(1, 0, 2).reshape(inner, experts * rank)).view(-1, experts, rank)
    return h * (gates.view(1, -1, 1) if gates.dim() == 1 else gates.unsqueeze(-1))


def _expand(h, w, use_triton: bool):
    """(T, E, R) x (E, R, N) -> (T, N): the experts' ranks are the inner dimension."""
    if use_triton:
        from assistant.kernels import triton_lora

        return triton_lora.expand(h, w)
    experts, rank, width = w.shape
    return h.reshape(h.shape[0], experts * rank) @ w.reshape(experts * rank, width)


class _LoraExperts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a, b, gates, trainable, use_triton):
        gated = _shrink(x, a, gates, use_triton)
        ctx.save_for_backward(x, a, b, gates, gated)
        ctx.trainable, ctx.use_triton = trainable, use_triton
        return _expand(gated, b, use_triton)

    @staticmethod
    def backward(ctx, grad_out):
        x, a, b, gates, gated = ctx.saved_tensors
        t, use_triton = ctx.trainable, ctx.use_triton
        grad_out = grad_out.contiguous()
        # d(gated h) = grad_out @ B^T, per expert; times the gate again for d(x @ A).
        grad_h = _shrink(grad_out, b.transpose(1, 2), gates, use_triton)
        grad_x = _expand(grad_h, a.transpose(1, 2), use_triton) if ctx.needs_input_grad[0] else None
        grad_a = grad_b = None
        if t is not None and ctx.needs_input_grad[1]:
            grad_a = torch.zeros_like(a)
            grad_a[t] = x.t() @ grad_h[:, t]
        if t is not None and ctx.needs_input_grad[2]:
            grad_b = torch.zeros_like(b)
            grad_b[t] = gated[:, t].t() @ grad_out
        return grad_x, grad_a, grad_b, None, None, None
