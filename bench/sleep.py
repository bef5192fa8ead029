"""Sleep training speed: our loop against a plain transformers + peft loop, and the FLOP floor.

    python bench/sleep.py [--backend torch|mlx] [--shape smollm2-135m|qwen2.5-0.5b|small]
                          [--steps 4] [--batch 8] [--prompt-tokens 128] [--shared-tokens 32]
                          [--answer-tokens 64] [--probes-per-chunk 64] [--device auto]
                          [--kernels auto|on|off]

A random-weight model with the chosen shapes gets the same distillation
lessons (random prompts and answers, the teacher's top-32 targets) through
both loops, same steps, same run. The prompts of a batch begin alike for
``--shared-tokens`` (a night's lessons all begin with the chat's system turn,
about 32 tokens on the starter). Printed JSON:

- ``ours_vs_plain_tokens_per_s``: training throughput ratio (goal: >= 1.0);
- ``teacher_vs_probes_only``: the teacher's cost with a shared chunk prefix
  computed once, against scoring the probe tokens alone (goal: <= 1.2);
- ``night_vs_flop_floor``: measured time of teacher + training against the FLOPs
  they need divided by a large matmul's rate measured here (lower is better).

``kernels_vs_off`` is the torch night's seconds with ``--kernels`` (the config's
``sleep_kernels``) against the same night with our kernels off (below 1: they help).

With ``--backend mlx`` the MLX backend runs the same teacher and training work
next to the torch backend, and ``mlx_vs_torch`` gives each as a ratio
(throughputs: above 1 means MLX is faster; the night's seconds: below 1).
Without torch (a Mac), only MLX's own numbers are printed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {
    # SmolLM2-135M-Instruct's shapes: the starter model.
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    # Qwen2.5-0.5B-Instruct's shapes (random weights: speed does not depend on them).
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=8192,
        tie_word_embeddings=True,
    ),
}
TOP_K = 32
CHUNK_TOKENS = 512


def build_model(shape: str, out_dir: Path) -> Path:
    """A random Qwen2 with ``shape``, written with numpy so that MLX alone can load it."""
    from safetensors.numpy import save_file

    dims = SHAPES[shape]
    hidden, inner = dims["hidden_size"], dims["intermediate_size"]
    head = hidden // dims["num_attention_heads"]
    kv = head * dims["num_key_value_heads"]
    rng = np.random.default_rng(0)

    def normal(*size: int) -> np.ndarray:
        return rng.normal(0.0, 0.02, size).astype(np.float32)

    weights = {"model.embed_tokens.weight": normal(dims["vocab_size"], hidden)}
    weights["model.norm.weight"] = np.ones(hidden, np.float32)
    for i in range(dims["num_hidden_layers"]):
        layer = f"model.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            weights[f"{layer}{norm}.weight"] = np.ones(hidden, np.float32)
        for name, out in (("q_proj", hidden), ("k_proj", kv), ("v_proj", kv)):
            weights[f"{layer}self_attn.{name}.weight"] = normal(out, hidden)
            weights[f"{layer}self_attn.{name}.bias"] = np.zeros(out, np.float32)
        weights[f"{layer}self_attn.o_proj.weight"] = normal(hidden, hidden)
        weights[f"{layer}mlp.gate_proj.weight"] = normal(inner, hidden)
        weights[f"{layer}mlp.up_proj.weight"] = normal(inner, hidden)
        weights[f"{layer}mlp.down_proj.weight"] = normal(hidden, inner)
    out_dir.mkdir(parents=True)
    save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config = {
        **dims,
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1e6,
        "torch_dtype": "float32",
    }
    (out_dir / "config.json").write_text(json.dumps(config))
    return out_dir


def matmul_flops_per_second(device: str) -> float:
    import torch

    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    for _ in range(2):
        a @ b
    repeats, started = 8, time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return repeats * 2 * 2048**3 / (time.perf_counter() - started)


def plain_peft_loop(model_dir: Path, lessons, steps: int, batch: int, device: str) -> float:
    """The loop one would write with transformers + peft: full logits, then the KL."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.backends.protocol import ALL_LINEAR

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules=list(ALL_LINEAR), task_type="CAUSAL_LM")
    model = get_peft_model(model, config).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens, started = 0, time.perf_counter()
    for step in range(steps):
        if step == 1:  # the first step (allocations, optimizer state) is not timed
            tokens, started = 0, time.perf_counter()
        group = lessons[step * batch : (step + 1) * batch]
        ids = torch.tensor([[*x.prompt, *x.answer] for x in group], device=device)
        logits = model(input_ids=ids).logits
        start = len(group[0].prompt) - 1
        student = torch.log_softmax(logits[:, start : start + len(group[0].answer)].float(), -1)
        target_ids = torch.tensor(np.stack([x.targets.token_ids for x in group]), device=device)
        teacher = torch.log_softmax(
            torch.tensor(np.stack([x.targets.logprobs for x in group]), device=device), -1
        )
        loss = (teacher.exp() * (teacher - student.gather(-1, target_ids))).sum(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += ids.numel()
    return tokens / (time.perf_counter() - started)


def work(args: argparse.Namespace) -> tuple[list, list, list]:
    """The teacher's chunk prefix and probes, and the training lessons: random, seeded."""
    from assistant.backends.protocol import Continuation, Lesson, TopK

    rng = np.random.default_rng(0)
    vocab = SHAPES[args.shape]["vocab_size"]
    prefix = rng.integers(0, vocab, CHUNK_TOKENS).tolist()
    probes = [
        Continuation(
            rng.integers(0, vocab, 16).tolist(),
            rng.integers(0, vocab, args.answer_tokens).tolist(),
        )
        for _ in range(args.probes_per_chunk)
    ]
    count = args.steps * args.batch
    system_turn = rng.integers(0, vocab, args.shared_tokens).tolist()
    prompts = [
        system_turn + rng.integers(0, vocab, args.prompt_tokens - args.shared_tokens).tolist()
        for _ in range(count)
    ]
    answers = [rng.integers(0, vocab, args.answer_tokens).tolist() for _ in range(count)]
    targets = [
        TopK(
            rng.integers(0, vocab, (args.answer_tokens, TOP_K)),
            np.sort(np.log(rng.dirichlet(np.ones(TOP_K), args.answer_tokens)))[:, ::-1],
        )
        for _ in range(count)
    ]
    lessons = [Lesson(p, a, t) for p, a, t in zip(prompts, answers, targets, strict=True)]
    return prefix, probes, lessons


def measure(backend, prefix: list, probes: list, lessons: list, args) -> dict:
    """Seconds for the teacher (chunk prefix once, then its probes), the probes alone, and
    the training steps after the first (allocations and optimizer state are not timed)."""
    backend.teacher_topk(prefix, probes[:2], TOP_K)  # warm-up, not timed
    started = time.perf_counter()
    backend.teacher_topk(prefix, probes, TOP_K)
    teacher = time.perf_counter() - started
    started = time.perf_counter()
    backend.teacher_topk(probes[0].prompt[:1], probes, TOP_K)
    probes_only = time.perf_counter() - started
    for step in range(args.steps):
        if step == 1:
            started = time.perf_counter()
        backend.train_step(lessons[step * args.batch : (step + 1) * args.batch], 1e-4)
    return {"teacher": teacher, "probes_only": probes_only, "train": time.perf_counter() - started}


def main() -> None:
    import importlib.util

    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["torch", "mlx"], default="torch")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=4, help="the first is not timed")
    parser.add_argument("--probes-per-chunk", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--shared-tokens", type=int, default=32, help="of the prompt tokens")
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--kernels", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()

    from assistant.backends.choice import load_backend

    has_torch = importlib.util.find_spec("torch") is not None
    prefix, probes, lessons = work(args)
    tokens = (args.steps - 1) * args.batch * (args.prompt_tokens + args.answer_tokens)
    teacher_tokens = CHUNK_TOKENS + args.probes_per_chunk * (16 + args.answer_tokens)
    result: dict = {
        "backend": args.backend,
        "shape": args.shape,
        "steps": args.steps,
        "batch": args.batch,
        "tokens_per_step": args.batch * (args.prompt_tokens + args.answer_tokens),
        "shared_tokens": args.shared_tokens,
        "probes_per_chunk": args.probes_per_chunk,
    }
    with tempfile.TemporaryDirectory(prefix="bench-sleep-") as root:
        model_dir = build_model(args.shape, Path(root) / "model")
        measured: dict[str, dict] = {}
        for name in ("torch", "mlx") if args.backend == "mlx" else ("torch",):
            if name == "torch" and not has_torch:
                result["torch"] = "not installed: MLX's numbers only"
                continue
            backend = load_backend(name, model_dir, [], None, args.device, args.kernels)
            times = measure(backend, prefix, probes, lessons, args)
            measured[name] = {
                "device": backend.device,
                "training_tokens_per_s": round(tokens / times["train"], 1),
                "teacher_tokens_per_s": round(teacher_tokens / times["teacher"], 1),
                "teacher_seconds": round(times["teacher"], 3),
                "teacher_vs_probes_only": round(times["teacher"] / times["probes_only"], 3),
                "night_seconds": round(times["teacher"] + times["train"], 3),
            }
            del backend
        result |= measured
        if args.backend == "mlx" and "torch" in measured:
            mlx, torch = measured["mlx"], measured["torch"]
            result["mlx_vs_torch"] = {
                key: round(mlx[key] / torch[key], 3)
                for key in ("training_tokens_per_s", "teacher_tokens_per_s", "night_seconds")
            }
        if args.backend == "torch" and args.kernels != "off":
            backend = load_backend("torch", model_dir, [], None, args.device, "off")
            times = measure(backend, prefix, probes, lessons, args)
            del backend
            off = times["teacher"] + times["train"]
            result["kernels_vs_off"] = round(measured["torch"]["night_seconds"] / off, 3)
        if args.backend == "torch":
            ours = measured["torch"]
            plain = plain_peft_loop(model_dir, lessons, args.steps, args.batch, ours["device"])
            rate = matmul_flops_per_second(ours["device"])
            parameters = sum(a.size for a in _weights(model_dir))
            # Forward ~2 FLOPs per parameter and token; LoRA training adds the backward through
            # the activations (~2 more), not the frozen weights' gradients.
            floor = (2 * parameters * teacher_tokens + 4 * parameters * tokens) / rate
            result |= {
                "parameters": parameters,
                "plain_peft_tokens_per_s": round(plain, 1),
                "ours_vs_plain_tokens_per_s": round(ours["training_tokens_per_s"] / plain, 3),
                "matmul_gflops": round(rate / 1e9, 1),
                "flop_floor_seconds": round(floor, 3),
                "night_vs_flop_floor": round(ours["night_seconds"] / floor, 3),
            }
    print(json.dumps(result, indent=2))


def _weights(model_dir: Path) -> list[np.ndarray]:
    from safetensors.numpy import load_file

    return list(load_file(str(model_dir / "model.safetensors")).values())


if __name__ == "__main__":
    main()
