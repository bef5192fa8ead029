"""Sleep training speed: our loop against a plain transformers + peft loop, and the FLOP floor.

    python bench/sleep.py [--shape smollm2-135m|qwen2.5-0.5b|small] [--steps 4] [--batch 8]
                          [--prompt-tokens 128] [--shared-tokens 32] [--answer-tokens 64]
                          [--probes-per-chunk 64] [--device auto]

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
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**SHAPES[shape], max_position_embeddings=4096)
    Qwen2ForCausalLM(config).save_pretrained(out_dir)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=4, help="the first is not timed")
    parser.add_argument("--probes-per-chunk", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--shared-tokens", type=int, default=32, help="of the prompt tokens")
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from assistant.backends.protocol import Continuation, Lesson, TopK
    from assistant.backends.torch_backend import TorchBackend

    rng = np.random.default_rng(0)
    vocab = SHAPES[args.shape]["vocab_size"]
    with tempfile.TemporaryDirectory(prefix="bench-sleep-") as root:
        model_dir = build_model(args.shape, Path(root) / "model")
        backend = TorchBackend(model_dir, device=args.device)
        device = backend.device
        parameters = sum(p.numel() for p in backend.model.parameters())

        # Teacher: one chunk prefix, then its probes, against the probes alone.
        prefix = rng.integers(0, vocab, CHUNK_TOKENS).tolist()
        probes = [
            Continuation(
                rng.integers(0, vocab, 16).tolist(),
                rng.integers(0, vocab, args.answer_tokens).tolist(),
            )
            for _ in range(args.probes_per_chunk)
        ]
        backend.teacher_topk(prefix, probes[:2], TOP_K)  # warm-up, not timed
        started = time.perf_counter()
        backend.teacher_topk(prefix, probes, TOP_K)
        teacher_seconds = time.perf_counter() - started
        started = time.perf_counter()
        backend.teacher_topk(probes[0].prompt[:1], probes, TOP_K)
        probes_only_seconds = time.perf_counter() - started

        # Training: the same lessons through both loops.
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
        for step in range(args.steps):
            if step == 1:  # as in the plain loop, the first step is not timed
                started = time.perf_counter()
            backend.train_step(lessons[step * args.batch : (step + 1) * args.batch], 1e-4)
        train_seconds = time.perf_counter() - started
        tokens = (args.steps - 1) * args.batch * (args.prompt_tokens + args.answer_tokens)
        ours = tokens / train_seconds
        del backend
        plain = plain_peft_loop(model_dir, lessons, args.steps, args.batch, device)
        rate = matmul_flops_per_second(device)

    # Forward ~2 FLOPs per parameter and token; LoRA training adds the backward through the
    # activations (~2 more), not the frozen weights' gradients.
    teacher_tokens = CHUNK_TOKENS + args.probes_per_chunk * (16 + args.answer_tokens)
    floor_seconds = (2 * parameters * teacher_tokens + 4 * parameters * tokens) / rate
    print(
        json.dumps(
            {
                "shape": args.shape,
                "device": device,
                "parameters": parameters,
                "steps": args.steps,
                "batch": args.batch,
                "tokens_per_step": args.batch * (args.prompt_tokens + args.answer_tokens),
                "shared_tokens": args.shared_tokens,
                "probes_per_chunk": args.probes_per_chunk,
                "ours_tokens_per_s": round(ours, 1),
                "plain_peft_tokens_per_s": round(plain, 1),
                "ours_vs_plain_tokens_per_s": round(ours / plain, 3),
                "teacher_seconds": round(teacher_seconds, 3),
                "probes_only_seconds": round(probes_only_seconds, 3),
                "teacher_vs_probes_only": round(teacher_seconds / probes_only_seconds, 3),
                "matmul_gflops": round(rate / 1e9, 1),
                "night_seconds": round(teacher_seconds + train_seconds, 3),
                "flop_floor_seconds": round(floor_seconds, 3),
                "night_vs_flop_floor": round((teacher_seconds + train_seconds) / floor_seconds, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
