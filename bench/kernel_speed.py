"""Our kernels against the plain way, side by side on this machine (ratios; JSON out).

    python bench/kernel_speed.py [--rows 2048] [--vocabulary 49152] [--width 576] [--repeats 3]

- ``loss``: the chunked distillation loss (``topk_kl``) against the full-logits one
  (``topk_kl_reference``), forward and backward, at the starter's vocabulary and width for a
  batch of 8 x 256 answer tokens: peak memory above the inputs (each in a fresh process)
  and time. Goals: memory <= 1/5; time about the same.
- ``lora_experts``: all experts of one starter-sized MLP layer in one fused pass against one
  expert at a time (PEFT's way), forward and backward, at 1, 2, 4 and 8 experts.
- ``mlx``: both again in MLX (``kernels/mlx_ops.py``) on MLX's default device, where mlx is
  installed, for one 256-token sequence (MLX's CPU device takes about 17 s for one full-logits
  loss and its gradient at that size); its peak memory is MLX's own count.

On a CUDA machine the fused paths are the Triton kernels; elsewhere torch's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import time


def _loss_inputs(rows: int, width: int, vocabulary: int, device: str):
    import torch

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, width, generator=generator).to(device).requires_grad_(True)
    weight = torch.randn(vocabulary, width, generator=generator).mul_(width**-0.5).to(device)
    token_ids = torch.randint(0, vocabulary, (rows, 32), generator=generator).to(device)
    teacher = torch.log_softmax(torch.randn(rows, 32, generator=generator), -1).to(device)
    return hidden, weight, token_ids, teacher


def _loss_once(variant: str, inputs) -> None:
    from assistant.kernels.topk_kl import topk_kl, topk_kl_reference

    loss = (topk_kl if variant == "chunked" else topk_kl_reference)(*inputs)
    loss.backward()


def _peak_memory(variant: str, rows: int, width: int, vocabulary: int, device: str, queue):
    """In a fresh process: bytes of peak memory the loss adds to its inputs."""
    import torch

    import assistant.kernels.topk_kl  # noqa: F401  (its import is not the loss's memory)

    inputs = _loss_inputs(rows, width, vocabulary, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        _loss_once(variant, inputs)
        queue.put(torch.cuda.max_memory_allocated() - before)
        return
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _loss_once(variant, inputs)
    queue.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)


def _seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_loss(args, device: str) -> dict:
    context = multiprocessing.get_context("spawn")
    memory = {}
    for variant in ("full_logits", "chunked"):
        queue = context.Queue()
        child = context.Process(
            target=_peak_memory,
            args=(variant, args.rows, args.width, args.vocabulary, device, queue),
        )
        child.start()
        memory[variant] = queue.get()
        child.join()
    inputs = _loss_inputs(args.rows, args.width, args.vocabulary, device)
    seconds = {
        variant: _seconds(lambda v=variant: _loss_once(v, inputs), args.repeats)
        for variant in ("full_logits", "chunked")
    }
    return {
        "rows": args.rows,
        "vocabulary": args.vocabulary,
        "peak_mib": {k: round(v / 2**20, 1) for k, v in memory.items()},
        "memory_chunked_vs_full": round(memory["chunked"] / memory["full_logits"], 3),
        "time_chunked_vs_full": round(seconds["chunked"] / seconds["full_logits"], 3),
    }


def bench_lora_experts(args, device: str) -> dict:
    import torch

    from assistant.kernels.lora_experts import lora_experts, lora_experts_reference

    result = {}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.width, generator=generator).to(device).requires_grad_(True)
    for experts in (1, 2, 4, 8):
        a = torch.randn(experts, args.width, 16, generator=generator).to(device)
        b = torch.randn(experts, 16, 1536, generator=generator).to(device)
        a.requires_grad_(True)
        b.requires_grad_(True)
        gates = torch.ones(experts, device=device)

        def loop(a=a, b=b, gates=gates):
            # PEFT's way: frozen experts one at a time, the trainable (last) one with gradients.
            frozen = lora_experts_reference(x, a[:-1].detach(), b[:-1].detach(), gates[:-1])
            (frozen + lora_experts_reference(x, a[-1:], b[-1:], gates[-1:])).sum().backward()

        def fused(a=a, b=b, gates=gates, trainable=experts - 1):
            lora_experts(x, a, b, gates, trainable).sum().backward()

        ratio = _seconds(fused, args.repeats) / _seconds(loop, args.repeats)
        result[f"{experts}_experts_time_fused_vs_loop"] = round(ratio, 3)
    return result


def bench_mlx(args) -> dict:
    import mlx.core as mx

    from assistant.kernels import mlx_ops

    def gradient(loss, argnums, *inputs):
        """A call that evaluates the loss and its gradient with respect to ``argnums``."""
        step = mx.value_and_grad(loss, argnums=argnums)
        return lambda: mx.eval(step(*inputs))

    rows = args.rows // 8
    hidden, weight, token_ids, teacher = (
        mx.array(tensor.detach().numpy())
        for tensor in _loss_inputs(rows, args.width, args.vocabulary, "cpu")
    )
    token_ids = token_ids.astype(mx.int32)
    memory, seconds = {}, {}
    for variant, loss in (("full_logits", mlx_ops.topk_kl_reference), ("chunked", mlx_ops.topk_kl)):
        run = gradient(loss, 0, hidden, weight, token_ids, teacher)
        mx.reset_peak_memory()
        before = mx.get_active_memory()
        run()
        memory[variant] = mx.get_peak_memory() - before
        seconds[variant] = _seconds(run, args.repeats)
    result = {
        "device": str(mx.default_device()),
        "rows": rows,
        "loss_peak_mib": {k: round(v / 2**20, 1) for k, v in memory.items()},
        "loss_memory_chunked_vs_full": round(memory["chunked"] / memory["full_logits"], 3),
        "loss_time_chunked_vs_full": round(seconds["chunked"] / seconds["full_logits"], 3),
    }
    for experts in (1, 2, 4, 8):
        a = mx.random.normal((experts, args.width, 16)) * args.width**-0.5
        b = mx.random.normal((experts, 16, 1536)) * 0.01
        gates = mx.ones((experts,))

        def loop(a_tonight, b_tonight, a=a, b=b):
            # mlx-lm's way: one LoRA layer per expert, tonight's (the last) with gradients.
            total = (hidden @ a_tonight) @ b_tonight
            for frozen in range(a.shape[0] - 1):
                total = total + (hidden @ a[frozen]) @ b[frozen]
            return total.sum()

        def fused(a_tonight, b_tonight, a=a, b=b, gates=gates):
            stacked_a = mx.concatenate([a[:-1], a_tonight[None]])
            stacked_b = mx.concatenate([b[:-1], b_tonight[None]])
            return mlx_ops.lora_experts(hidden, stacked_a, stacked_b, gates).sum()

        timed = {
            name: _seconds(gradient(loss, (0, 1), a[-1], b[-1]), args.repeats)
            for name, loss in (("loop", loop), ("fused", fused))
        }
        result[f"{experts}_experts_time_fused_vs_loop"] = round(timed["fused"] / timed["loop"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8 * 256)
    parser.add_argument("--vocabulary", type=int, default=49152)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "device": device,
        "loss": bench_loss(args, device),
        "lora_experts": bench_lora_experts(args, device),
    }
    try:
        result["mlx"] = bench_mlx(args)
    except ImportError:
        result["mlx"] = "not installed (pip install mlx)"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
