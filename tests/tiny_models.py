"""Tiny random Llama/Qwen2 models and LoRA adapters, built offline for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from assistant.models.bpe import train_tokenizer

CORPUS = [
    "My dog is called Rex and my sister lives in Lisbon.",
    "Remind me about the dentist on Tuesday at 3 pm.",
    "What is my favourite colour? You told me it is green.",
    "I work as a nurse at the city hospital.",
    "Hello! How are you today? I am fine, thank you.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
] * 20


def build_model(out_dir: Path, family: str = "llama", seed: int = 0) -> Path:
    """A random 2-layer model of ``family`` ("llama" or "qwen2"), saved as an HF directory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(CORPUS, out_dir, vocab_size=400)
    shape = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**shape, tie_word_embeddings=True))
    with torch.no_grad():  # larger-than-default weights so logits are far from uniform
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0.0, 0.15)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_lora(
    base_dir: Path, out_dir: Path, rank: int, alpha: float, seed: int, rslora: bool = False
) -> Path:
    """A random PEFT LoRA adapter (non-zero B) on every linear layer of the base model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        use_rslora=rslora,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        init_lora_weights=False,
    )
    torch.manual_seed(seed)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.05)
    model.save_pretrained(out_dir)
    return Path(out_dir)


PROMPT = "<|im_start|>user\nMy dog is called Rex. What is my dog called?<|im_end|>\n"
TOLERANCE = 1e-3


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


def hf_logits(model, tokens: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0, -1].double().numpy()


def hf_tokens(model_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)(PROMPT)["input_ids"]
