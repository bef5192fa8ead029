"""Triton kernels for ``lora_experts``: shrink-and-gate, and expand over all experts at once.

The shrink/expand split is punica's and vLLM's (``lora/ops/triton_ops``): one program computes a
block of tokens for one expert's rank slice (shrink), or a block of tokens by a block of output
features summed over every expert's rank (expand). Accumulation is in fp32; fp32 inputs multiply
in IEEE fp32 (not TF32) so the kernels match the torch path to 1e-5.

Tested on the CPU under ``TRITON_INTERPRET=1``; compiled for the GPU otherwise. Imported only
when a kernel runs: Triton's import is slow, and it reads ``TRITON_INTERPRET`` as it defines them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _block(size: int) -> int:
    """A power-of-two block covering ``size``, at least 16 (``tl.dot``'s smallest tile)."""
    return max(16, 1 << (size - 1).bit_length())


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def shrink(x: torch.Tensor, w: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """(T, K) @ (E, K, R) -> (T, E, R) in fp32-accumulated ``x``'s dtype, each slice gated."""
    tokens, inner = x.shape
    experts, _, rank = w.shape
    out = torch.empty((tokens, experts, rank), dtype=x.dtype, device=x.device)
    per_token = gates.dim() == 2
    block_m, block_k = 16, min(64, _block(inner))
    grid = (triton.cdiv(tokens, block_m), experts)
    shrink_kernel[grid](
        x, w, gates, out,
        tokens, inner, rank,
        x.stride(0), x.stride(1),
        w.stride(0), w.stride(1), w.stride(2),
        gates.stride(0) if per_token else 0, gates.stride(-1),
        out.stride(0), out.stride(1), out.stride(2),
        BLOCK_M=block_m, BLOCK_K=block_k, BLOCK_R=_block(rank),
        PRECISION=_precision(x.dtype),
    )  # fmt: skip
    return out


def expand(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(T, E, R) @ (E, R, N) -> (T, N): the sum over experts and ranks in one pass."""
    tokens, experts, rank = h.shape
    width = w.shape[2]
    out = torch.empty((tokens, width), dtype=h.dtype, device=h.device)
    block_m, block_n = 16, min(64, _block(width))
    grid = (triton.cdiv(tokens, block_m), triton.cdiv(width, block_n))
    expand_kernel[grid](
        h, w, out,
        tokens, experts, rank, width,
        h.stride(0), h.stride(1), h.stride(2),
        w.stride(0), w.stride(1), w.stride(2),
        out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_R=_block(rank), BLOCK_N=block_n,
        PRECISION=_precision(h.dtype),
    )  # fmt: skip
    return out


@triton.jit
def shrink_kernel(
    x_ptr, w_ptr, gates_ptr, out_ptr,
    tokens, inner, rank,
    stride_xt, stride_xk,
    stride_we, stride_wk, stride_wr,
    stride_gt, stride_ge,
    stride_ot, stride_oe, stride_or,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One block of tokens times one expert's A: out[m, e, :] = gate[m, e] * x[m] @ A_e."""
    pid_m, expert = tl.program_id(0), tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, inner, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + m[:, None] * stride_xt + k[None, :] * stride_xk,
            mask=(m[:, None] < tokens) & (k[None, :] < inner),
            other=0.0,
        )
        w = tl.load(
            w_ptr + expert * stride_we + k[:, None] * stride_wk + r[None, :] * stride_wr,
            mask=(k[:, None] < inner) & (r[None, :] < rank),
            other=0.0,
        )
        acc += tl.dot(x, w, input_precision=PRECISION)
    gate = tl.load(gates_ptr + m * stride_gt + expert * stride_ge, mask=m < tokens, other=0.0)
    acc = acc * gate.to(tl.float32)[:, None]
    tl.store(
        out_ptr + m[:, None] * stride_ot + expert * stride_oe + r[None, :] * stride_or,
        acc.to(out_ptr.dtype.element_ty),
        mask=(m[:, None] < tokens) & (r[None, :] < rank),
    )


@triton.jit
def expand_kernel(
    h_ptr, w_ptr, out_ptr,
    tokens, experts, rank, width,
    stride_ht, stride_he, stride_hr,
    stride_we, stride_wr, stride_wn,
    stride_ot, stride_on,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    """One block of tokens by one block of outputs: out[m, n] = sum over e, r of h[m, e, r] B_e."""
    pid_m, pid_n = tl.program_id(0), tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for expert in range(0, experts):
        for r0 in range(0, rank, BLOCK_R):
            r = r0 + tl.arange(0, BLOCK_R)
            h = tl.load(
                h_ptr + m[:, None] * stride_ht + expert * stride_he + r[None, :] * stride_hr,
                mask=(m[:, None] < tokens) & (r[None, :] < rank),
                other=0.0,
            )
            w = tl.load(
                w_ptr + expert * stride_we + r[:, None] * stride_wr + n[None, :] * stride_wn,
                mask=(r[:, None] < rank) & (n[None, :] < width),
                other=0.0,
            )
            acc += tl.dot(h, w, input_precision=PRECISION)
    tl.store(
        out_ptr + m[:, None] * stride_ot + n[None, :] * stride_on,
        acc.to(out_ptr.dtype.element_ty),
        mask=(m[:, None] < tokens) & (n[None, :] < width),
    )
