"""Our GGUF converter and LoRA writer against transformers/PEFT, through real llama.cpp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.engine import ChatEngine, ExpertSpec
from assistant.experts.lora_gguf import write_gguf_lora
from assistant.models.hf_weights import read_config
from tests.tiny_models import PROMPT, TOLERANCE, build_lora, hf_logits, hf_tokens, relative_error


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_converted_model_matches_transformers(request, home, family):
    from transformers import AutoModelForCausalLM

    model_dir = request.getfixturevalue(family)
    result = CliRunner().invoke(
        cli, ["model", "add", str(model_dir), "--name", family.replace("_", "-")]
    )
    assert result.exit_code == 0, result.output
    from assistant.runtime import Runtime

    record = Runtime().models.active()
    engine = ChatEngine(record.gguf_path, n_ctx=256)
    tokens = hf_tokens(model_dir)
    assert engine.tokenize(PROMPT) == tokens  # llama.cpp's tokenizer agrees with HF's
    reference = hf_logits(AutoModelForCausalLM.from_pretrained(model_dir), tokens)
    assert relative_error(engine.last_logits(tokens), reference) < TOLERANCE
    engine.close()


def _peft_with_scales(base_dir: Path, adapters: dict[str, Path], scales: dict[str, float]):
    """The PEFT reference: every adapter active at once, each LoRA update times its scale."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    names = list(adapters)
    model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    model.base_model.set_adapter(names)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name in names:
                module.scaling[name] *= scales[name]
    return model.eval()


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_two_gguf_loras_match_peft_at_their_scales(request, tmp_path, family):
    from assistant.models.convert import convert_to_gguf

    base_dir = request.getfixturevalue(family)
    config = read_config(base_dir)
    base_gguf = convert_to_gguf(base_dir, tmp_path / "base.gguf", "base")
    adapters = {
        "a": build_lora(base_dir, tmp_path / "a", rank=4, alpha=8, seed=1),
        "b": build_lora(base_dir, tmp_path / "b", rank=8, alpha=4, seed=2, rslora=True),
    }
    ggufs = {n: write_gguf_lora(d, config, tmp_path / f"{n}.gguf") for n, d in adapters.items()}
    tokens = hf_tokens(base_dir)

    engine = ChatEngine(
        base_gguf, [ExpertSpec(ggufs["a"], 1.0), ExpertSpec(ggufs["b"], 0.5)], n_ctx=256
    )
    first = engine.last_logits(tokens)
    reference = hf_logits(_peft_with_scales(base_dir, adapters, {"a": 1.0, "b": 0.5}), tokens)
    assert relative_error(first, reference) < TOLERANCE

    engine.set_experts([ExpertSpec(ggufs["a"], 0.5), ExpertSpec(ggufs["b"], 1.0)])
    second = engine.last_logits(tokens)
    reference = hf_logits(_peft_with_scales(base_dir, adapters, {"a": 0.5, "b": 1.0}), tokens)
    assert relative_error(second, reference) < TOLERANCE
    assert relative_error(second, first) > 100 * TOLERANCE  # the new scales took effect

    engine.set_experts([])
    base_reference = hf_logits(_peft_with_scales(base_dir, adapters, {"a": 0.0, "b": 0.0}), tokens)
    assert relative_error(engine.last_logits(tokens), base_reference) < TOLERANCE
    engine.close()


def test_quantized_model_loads_and_chats(home, tiny_llama):
    result = CliRunner().invoke(
        cli, ["model", "add", str(tiny_llama), "--name", "q", "--quant", "q8_0"]
    )
    assert result.exit_code == 0, result.output
    from assistant.runtime import Runtime

    record = Runtime().models.get("q")
    assert record.gguf_path.name == "model-q8_0.gguf"
    assert (
        record.gguf_path.stat().st_size
        < (record.gguf_path.parent / "hf" / "model.safetensors").stat().st_size
    )
    engine = ChatEngine(record.gguf_path, n_ctx=256)
    assert np.isfinite(engine.last_logits(hf_tokens(tiny_llama))).all()
    engine.close()
