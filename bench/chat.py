"""Chat speed: our engine against plain llama-cpp-python on the same GGUF, same run.

    python bench/chat.py [--model random-0.5b|starter] [--prompt-tokens 128] [--new-tokens 32]
                         [--repeats 3] [--experts 0,1,4,8]

The model is either a random-weight model with Qwen2.5-0.5B's shapes, built once
(cached in --workdir) and converted with our converter, or the packaged starter
(SmolLM2-135M-Instruct, Q4_1) run in place. Random rank-16 LoRA experts are written
through our PEFT->GGUF writer. Each measurement starts from an empty KV cache;
the configurations are interleaved round-robin so machine noise hits them alike.
Prints JSON with time to first token and decode tokens/s, and ratios to plain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

QWEN25_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
LORA_TARGETS = {
    "self_attn.q_proj": ("hidden", "q"),
    "self_attn.k_proj": ("hidden", "kv"),
    "self_attn.v_proj": ("hidden", "kv"),
    "self_attn.o_proj": ("q", "hidden"),
    "mlp.gate_proj": ("hidden", "inter"),
    "mlp.up_proj": ("hidden", "inter"),
    "mlp.down_proj": ("inter", "hidden"),
}


def build_model(workdir: Path) -> tuple[Path, dict]:
    """Random Qwen2.5-0.5B-shaped HF model (F16) and its GGUF, cached."""
    from assistant.models.convert import convert_to_gguf

    hf_dir, gguf_path = workdir / "qwen05b-random", workdir / "qwen05b-random.gguf"
    if not gguf_path.exists():
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        from assistant.models.bpe import train_tokenizer

        tokenizer = train_tokenizer(["random weights read no text"] * 4, hf_dir, vocab_size=300)
        torch.manual_seed(0)
        config = Qwen2Config(**QWEN25_05B, torch_dtype="float16")
        model = Qwen2ForCausalLM(config).to(torch.float16)
        # Zero the (tied) embedding rows of every id that is not printable ASCII text, so
        # greedy decoding emits a visible piece at every step for both engines alike.
        printable = [
            i
            for i in range(len(tokenizer))
            if (text := tokenizer.decode([i])).isprintable()
            and text.isascii()
            and text
            and i not in tokenizer.all_special_ids
        ]
        keep = torch.zeros(config.vocab_size, dtype=torch.bool)
        keep[printable] = True
        with torch.no_grad():
            model.model.embed_tokens.weight[~keep] = 0
        model.save_pretrained(hf_dir)
        convert_to_gguf(hf_dir, gguf_path, "qwen05b-random")
    return gguf_path, json.loads((hf_dir / "config.json").read_text())


def starter_model() -> tuple[Path, dict]:
    """The packaged starter GGUF and its config, read from the file's metadata."""
    from transformers import AutoConfig

    from assistant.models.starter import starter_gguf

    path = starter_gguf()
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name).to_dict()
    return path, {**config, "architectures": ["LlamaForCausalLM"]}


def build_experts(workdir: Path, config: dict, count: int, rank: int = 16) -> list[Path]:
    """Random PEFT LoRA adapters on every linear layer, converted to GGUF with our writer."""
    from safetensors.numpy import save_file

    from assistant.experts.lora_gguf import write_gguf_lora

    head_dim = config["hidden_size"] // config["num_attention_heads"]
    dims = {
        "hidden": config["hidden_size"],
        "q": config["num_attention_heads"] * head_dim,
        "kv": config["num_key_value_heads"] * head_dim,
        "inter": config["intermediate_size"],
    }
    paths = []
    for index in range(count):
        gguf_path = workdir / f"expert-{index}.gguf"
        if not gguf_path.exists():
            rng = np.random.default_rng(index)
            adapter_dir = workdir / f"expert-{index}"
            adapter_dir.mkdir(parents=True, exist_ok=True)
            tensors = {}
            for layer in range(config["num_hidden_layers"]):
                for module, (fan_in, fan_out) in LORA_TARGETS.items():
                    key = f"base_model.model.model.layers.{layer}.{module}"
                    tensors[f"{key}.lora_A.weight"] = rng.normal(
                        0, 0.02, (rank, dims[fan_in])
                    ).astype(np.float32)
                    tensors[f"{key}.lora_B.weight"] = rng.normal(
                        0, 0.02, (dims[fan_out], rank)
                    ).astype(np.float32)
            save_file(tensors, adapter_dir / "adapter_model.safetensors")
            (adapter_dir / "adapter_config.json").write_text(
                json.dumps(
                    {
                        "peft_type": "LORA",
                        "r": rank,
                        "lora_alpha": 2 * rank,
                        "target_modules": [m.split(".")[1] for m in LORA_TARGETS],
                    }
                )
            )
            write_gguf_lora(adapter_dir, config, gguf_path)
        paths.append(gguf_path)
    return paths


def timed_stream(pieces) -> dict:
    start = time.perf_counter()
    first = None
    count = 0
    for _ in pieces:
        count += 1
        if first is None:
            first = time.perf_counter()
    end = time.perf_counter()
    return {"ttft_s": first - start, "decode_tok_s": (count - 1) / (end - first), "tokens": count}


def main() -> None:
    import llama_cpp

    from assistant.engine import ChatEngine, ExpertSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["random-0.5b", "starter"], default="random-0.5b")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/assistant-bench"))
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--experts", default="0,1,4,8")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    workdir = args.workdir / args.model
    workdir.mkdir(parents=True, exist_ok=True)
    gguf_path, config = starter_model() if args.model == "starter" else build_model(workdir)
    expert_counts = [int(n) for n in args.experts.split(",")]
    experts = build_experts(workdir, config, max(expert_counts))
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(40, 120, args.prompt_tokens)]
    n_ctx = args.prompt_tokens + args.new_tokens + 16

    plain = llama_cpp.Llama(
        model_path=str(gguf_path), n_ctx=n_ctx, n_threads=args.threads, verbose=False
    )
    ours = {
        n: ChatEngine(
            gguf_path,
            [ExpertSpec(p, 1.0) for p in experts[:n]],
            n_ctx=n_ctx,
            n_threads=args.threads,
        )
        for n in expert_counts
    }

    def run_plain() -> dict:
        plain.reset()
        chunks = plain.create_completion(
            prompt, max_tokens=args.new_tokens, temperature=0.0, top_k=1, stream=True
        )
        return timed_stream(t for c in chunks if (t := c["choices"][0]["text"]))

    def run_ours(n: int) -> dict:
        engine = ours[n]
        engine.reset_cache()
        return timed_stream(engine.stream(prompt, args.new_tokens, 0.0))

    configs = {"plain_llama_cpp": run_plain} | {
        f"ours_{n}_experts": (lambda n=n: run_ours(n)) for n in expert_counts
    }
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    order = list(configs)
    for repeat in range(args.repeats):  # rotate the order so no config always runs first
        for name in order[repeat % len(order) :] + order[: repeat % len(order)]:
            runs[name].append(configs[name]())

    summary = {
        name: {
            "ttft_s": statistics.median(r["ttft_s"] for r in results),
            "decode_tok_s": statistics.median(r["decode_tok_s"] for r in results),
            "tokens": results[0]["tokens"],
        }
        for name, results in runs.items()
    }
    base = summary["plain_llama_cpp"]
    for stats in summary.values():
        stats["decode_ratio_vs_plain"] = stats["decode_tok_s"] / base["decode_tok_s"]
        stats["ttft_ratio_vs_plain"] = stats["ttft_s"] / base["ttft_s"]
    print(
        json.dumps(
            {
                "benchmark": "chat",
                "model": {
                    "random-0.5b": "random weights, Qwen2.5-0.5B shapes, F16 GGUF",
                    "starter": "SmolLM2-135M-Instruct, Q4_1 GGUF (packaged)",
                }[args.model],
                "experts": "rank 16 on q,k,v,o,gate,up,down, scale 1.0",
                "prompt_tokens": args.prompt_tokens,
                "new_tokens": args.new_tokens,
                "repeats": args.repeats,
                "threads": args.threads,
                "results": summary,
                "goal": "ours_0_experts decode and ttft within 5% of plain_llama_cpp",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
