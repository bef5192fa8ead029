"""Models added as GGUF files: quantized files in chat, their dequantized copies in training.

Tolerances for torch on the dequantized copy against llama.cpp on the quantized
file (largest difference over the largest reference logit). Both sides hold the
same weight values, so the difference is how llama.cpp computes with quantized
weights: it rounds every activation row to 8 bits (blocks of 32) before each
product and keeps the KV cache in F16. On the tiny random models (weights 3x
the usual scale, so errors grow layer to layer) that measured 1.9-3.2% for Q8_0
and Q4_0 alike, so the bound is 5e-2; an F32 file is exact (measured 0.0, bound
1e-3, as for the converter). A wrong rotary permutation gives errors near 100%.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from assistant.cli import cli
from assistant.engine import ChatEngine, ExpertSpec
from tests.tiny_models import PROMPT, TOLERANCE, build_lora, hf_logits, relative_error

QUANT_TOLERANCE = {"f32": TOLERANCE, "q8_0": 5e-2, "q4_0": 5e-2}  # see the module docstring


def _tiny_gguf(base_dir: Path, out_dir: Path, quant: str) -> Path:
    from assistant.models.convert import convert_to_gguf, quantize

    out_dir.mkdir(parents=True, exist_ok=True)
    f32 = convert_to_gguf(base_dir, out_dir / "tiny-f32.gguf", "tiny")
    return f32 if quant == "f32" else quantize(f32, out_dir / f"tiny-{quant}.gguf", quant)


def _add(source: str, name: str) -> None:
    result = CliRunner().invoke(cli, ["model", "add", source, "--name", name])
    assert result.exit_code == 0, result.output


def _registry():
    from assistant.runtime import Runtime

    return Runtime().models


def _torch_logits(hf_dir: Path, tokens: list[int], adapter: Path | None = None) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return hf_logits(model.eval(), tokens)


@pytest.mark.parametrize("quant", ["f32", "q8_0", "q4_0"])
@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_a_quantized_gguf_chats_as_is_and_trains_on_its_dequantized_copy(
    request, home, tmp_path, family, quant
):
    base_dir = request.getfixturevalue(family)
    gguf_path = _tiny_gguf(base_dir, tmp_path / "files", quant)
    _add(str(gguf_path), "tiny")
    registry = _registry()
    record = registry.get("tiny")
    assert record.gguf_path == gguf_path.resolve()  # run in place, not copied
    assert record.quant == quant and record.runs_in_place
    assert not record.hf_dir.exists()  # made on first need, not when added
    hf_dir = registry.training_dir(record)
    assert json.loads((hf_dir / "config.json").read_text())["architectures"] == [
        registry.get("tiny").architecture
    ]
    engine = ChatEngine(record.gguf_path, n_ctx=256)
    try:
        from transformers import AutoTokenizer

        tokens = AutoTokenizer.from_pretrained(hf_dir)(PROMPT)["input_ids"]
        assert engine.tokenize(PROMPT) == tokens  # the copy's tokenizer is llama.cpp's
        error = relative_error(engine.last_logits(tokens), _torch_logits(hf_dir, tokens))
    finally:
        engine.close()
    assert error < QUANT_TOLERANCE[quant]


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_f32_gguf_to_hf_to_gguf_is_bit_exact(request, home, tmp_path, family):
    import gguf

    from assistant.models.convert import convert_to_gguf

    first = _tiny_gguf(request.getfixturevalue(family), tmp_path, "f32")
    _add(str(first), "tiny")
    registry = _registry()
    hf_dir = registry.training_dir(registry.get("tiny"))
    second = convert_to_gguf(hf_dir, tmp_path / "again.gguf", "tiny")
    tensors = [
        {t.name: (t.tensor_type, tuple(t.shape), t.data.tobytes()) for t in reader.tensors}
        for reader in (gguf.GGUFReader(first), gguf.GGUFReader(second))
    ]
    assert tensors[0].keys() == tensors[1].keys()
    assert tensors[0] == tensors[1]


def test_an_expert_trained_on_the_copy_applies_to_the_quantized_file(home, tmp_path, tiny_llama):
    from assistant.experts.lora_gguf import write_gguf_lora
    from assistant.models.hf_weights import read_config

    _add(str(_tiny_gguf(tiny_llama, tmp_path / "files", "q8_0")), "tiny")
    registry = _registry()
    record = registry.get("tiny")
    hf_dir = registry.training_dir(record)
    adapter = build_lora(hf_dir, tmp_path / "expert", rank=4, alpha=8, seed=3)
    lora = write_gguf_lora(adapter, read_config(hf_dir), tmp_path / "expert.gguf")
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(hf_dir)(PROMPT)["input_ids"]
    reference = _torch_logits(hf_dir, tokens, adapter)
    engine = ChatEngine(record.gguf_path, [ExpertSpec(lora)], n_ctx=256)
    try:
        with_expert = engine.last_logits(tokens)
        engine.set_experts([])
        without = engine.last_logits(tokens)
    finally:
        engine.close()
    assert relative_error(with_expert, reference) < QUANT_TOLERANCE["q8_0"]
    assert relative_error(without, reference) > 4 * QUANT_TOLERANCE["q8_0"]  # it took effect


def test_the_training_copy_is_made_without_importing_torch(tmp_path, tiny_qwen2):
    """What Apple silicon, with MLX and no torch, does: the copy is made in a process where
    torch cannot be imported, and its files are the ones made here, where it can be (so no
    path takes a torch detour). That the copy is right is checked elsewhere: against
    transformers' own GGUF loader below, and against llama.cpp's logits above and in
    tests/test_starter.py."""
    import subprocess
    import sys

    from assistant.models.gguf_import import dequantize_to_hf

    gguf_path = _tiny_gguf(tiny_qwen2, tmp_path / "files", "q8_0")
    script = (
        "import sys; sys.modules['torch'] = None\n"  # as if not installed
        "from pathlib import Path\n"
        "from assistant.models.gguf_import import dequantize_to_hf\n"
        "dequantize_to_hf(Path(sys.argv[1]), Path(sys.argv[2]))\n"
    )
    made = subprocess.run(
        [sys.executable, "-c", script, str(gguf_path), str(tmp_path / "without")],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    here = dequantize_to_hf(gguf_path, tmp_path / "here")
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (tmp_path / "without" / name).read_bytes() == (here / name).read_bytes(), name


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_the_training_copy_is_what_transformers_own_gguf_loader_reads(request, tmp_path, family):
    """Config, weights (Llama's q/k rows unpermuted) and tokens as transformers reads them
    from the quantized file itself, with torch: the same values, bit for bit."""
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from assistant.models.gguf_import import dequantize_to_hf

    gguf_path = _tiny_gguf(request.getfixturevalue(family), tmp_path / "files", "q8_0")
    ours = dequantize_to_hf(gguf_path, tmp_path / "hf")
    where = {"pretrained_model_name_or_path": gguf_path.parent, "gguf_file": gguf_path.name}

    def config(**source) -> dict:
        settings = AutoConfig.from_pretrained(**source).to_dict()
        return {
            k: v
            for k, v in settings.items()
            if k not in ("_name_or_path", "architectures", "dtype", "torch_dtype")
        }

    assert config(pretrained_model_name_or_path=ours) == config(**where)
    model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    theirs = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    weights = load_file(ours / "model.safetensors")
    assert set(weights) <= set(theirs)
    assert set(theirs) - set(weights) <= {"lm_head.weight"}  # tied: saved once
    for name, array in weights.items():
        assert np.array_equal(array, theirs[name]), name
    tokens = AutoTokenizer.from_pretrained(**where)(PROMPT)["input_ids"]
    assert AutoTokenizer.from_pretrained(ours)(PROMPT)["input_ids"] == tokens


def _copy_gguf(source: Path, path: Path, metadata: dict, tensors: dict) -> Path:
    """``source`` (an F32 file) with ``metadata`` ({key: (value, GGUFValueType)}) and
    ``tensors`` (F32 arrays) added."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(path, reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        array = field.types[0] == gguf.GGUFValueType.ARRAY
        writer.add_key_value(
            name, field.contents(), field.types[0], field.types[-1] if array else None
        )
    for name, (value, kind) in metadata.items():
        writer.add_key_value(name, value, kind)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data))
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("metadata", "tensors", "how"),
    [
        ({}, {"rope_freqs.weight": np.ones(8, np.float32)}, "a rope_freqs tensor"),
        (
            {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0},
            {},
            "yarn scaling by 4",
        ),
    ],
    ids=["llama-3.1-rope-freqs", "yarn"],
)
def test_rope_scaling_is_refused_for_training_and_leaves_no_copy(
    tmp_path, tiny_llama, metadata, tensors, how
):
    import gguf

    from assistant.errors import ModelError
    from assistant.models.gguf_import import dequantize_to_hf

    kinds = {str: gguf.GGUFValueType.STRING, float: gguf.GGUFValueType.FLOAT32}
    scaled = _copy_gguf(
        _tiny_gguf(tiny_llama, tmp_path / "files", "f32"),
        tmp_path / "scaled.gguf",
        {key: (value, kinds[type(value)]) for key, value in metadata.items()},
        tensors,
    )
    out = tmp_path / "models" / "hf"
    with pytest.raises(ModelError, match="rope scaling .* cannot be trained yet") as refused:
        dequantize_to_hf(scaled, out)
    assert how in str(refused.value) and "chats with this model" in str(refused.value)
    assert not out.exists() and not (tmp_path / "models" / ".hf.partial").exists()


def test_a_failed_copy_leaves_no_partial_directory_and_the_tokenizer_fails_first(
    tmp_path, tiny_llama, monkeypatch
):
    from assistant.errors import ModelError
    from assistant.models import gguf_import, gguf_tokenizer

    gguf_path = _tiny_gguf(tiny_llama, tmp_path / "files", "f32")
    out = tmp_path / "models" / "hf"
    partial = tmp_path / "models" / ".hf.partial"
    dequantized: list[str] = []
    real_weights = gguf_import._hf_weights

    def weights(reader, config):
        dequantized.append(config["model_type"])
        return real_weights(reader, config)

    def no_tokenizer(*_):
        raise ModelError("Cannot build a training tokenizer (as for SentencePiece without torch).")

    monkeypatch.setattr(gguf_import, "_hf_weights", weights)
    monkeypatch.setattr(gguf_tokenizer, "save_tokenizer", no_tokenizer)
    with pytest.raises(ModelError, match="training tokenizer"):
        gguf_import.dequantize_to_hf(gguf_path, out)
    assert dequantized == []  # failed before any weight was dequantized
    assert not partial.exists() and not out.exists()

    monkeypatch.undo()

    def interrupted(reader, config):
        raise KeyboardInterrupt  # Ctrl-C half-way through the weights

    monkeypatch.setattr(gguf_import, "_hf_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gguf_import.dequantize_to_hf(gguf_path, out)
    assert not partial.exists() and not out.exists()
    monkeypatch.undo()
    assert (gguf_import.dequantize_to_hf(gguf_path, out) / "model.safetensors").is_file()


def test_a_byte_level_vocabulary_adds_bos_when_the_file_says_llama_cpp_does() -> None:
    from assistant.models.gguf_tokenizer import _byte_level

    fields = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",
        "tokenizer.ggml.tokens": ["<s>", "</s>", "a", "b", "ab", "Ġ", "Ġab"],
        "tokenizer.ggml.token_type": [3, 3, 1, 1, 1, 1, 1],
        "tokenizer.ggml.merges": ["a b", "Ġ ab"],
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1,
    }
    assert _byte_level(fields)("ab ab")["input_ids"] == [4, 6]
    fields["tokenizer.ggml.add_bos_token"] = True
    tokenizer = _byte_level(fields)
    assert tokenizer("ab ab")["input_ids"] == [0, 4, 6]
    assert tokenizer("ab</s>")["input_ids"] == [0, 4, 1]  # a control token stays whole


def test_a_changed_gguf_gets_a_new_training_copy(home, tmp_path, tiny_llama, tiny_qwen2):
    import shutil

    path = tmp_path / "model.gguf"
    shutil.copyfile(_tiny_gguf(tiny_llama, tmp_path / "a", "f32"), path)
    _add(str(path), "m")
    registry = _registry()
    first = registry.training_dir(registry.get("m"))
    made = (first / "config.json").stat().st_mtime_ns
    assert registry.training_dir(registry.get("m")) == first  # current: not made again
    assert (first / "config.json").stat().st_mtime_ns == made
    shutil.copyfile(_tiny_gguf(tiny_qwen2, tmp_path / "b", "f32"), path)  # replaced in place
    second = registry.training_dir(registry.get("m"))
    assert json.loads((second / "config.json").read_text())["model_type"] == "qwen2"


def _fake_ollama(root: Path, blob_source: Path, name: str, tag: str) -> None:
    digest = "sha256:" + "ab" * 32
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    (blobs / digest.replace(":", "-")).write_bytes(blob_source.read_bytes())
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / name / tag
    manifest.parent.mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "cd" * 32},
        {"mediaType": "application/vnd.ollama.image.model", "digest": digest},
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": layers}))


def test_ollama_names_resolve_to_their_blob(home, tmp_path, monkeypatch, tiny_qwen2):
    root = tmp_path / "ollama"
    _fake_ollama(root, _tiny_gguf(tiny_qwen2, tmp_path / "files", "q8_0"), "tinyqwen", "0.5b-Q8_0")
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    result = CliRunner().invoke(cli, ["model", "add", "ollama:tinyqwen:0.5b-Q8_0"])
    assert result.exit_code == 0, result.output
    record = _registry().get("tinyqwen-0.5b-q8_0")  # a name the registry accepts
    assert record.gguf_path == (root / "blobs" / ("sha256-" + "ab" * 32)).resolve()
    assert record.source == "ollama:tinyqwen:0.5b-Q8_0" and record.quant == "q8_0"
    engine = ChatEngine(record.gguf_path, n_ctx=256)
    assert np.isfinite(engine.last_logits(engine.tokenize(PROMPT))).all()
    engine.close()


def _gpt2_gguf(path: Path) -> Path:
    import gguf

    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, _: _gpt2_gguf(tmp / "gpt2.gguf"), "is a gpt2 model; supported are"),
        (
            lambda tmp, good: _truncated(good, tmp / "truncated.gguf"),
            "is not a readable GGUF file",
        ),
        (
            lambda tmp, _: _text(tmp / "notes.gguf"),
            "is not a readable GGUF file",
        ),
        (lambda tmp, _: "ollama:nosuchmodel", "Ollama has no model nosuchmodel:latest"),
    ],
    ids=["unsupported-architecture", "truncated", "text-file", "unknown-ollama-name"],
)
def test_bad_gguf_sources_are_one_clear_line_and_register_nothing(
    home, tmp_path, monkeypatch, tiny_llama, make, message
):
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "empty-ollama"))
    source = make(tmp_path, _tiny_gguf(tiny_llama, tmp_path / "files", "q8_0"))
    result = CliRunner().invoke(cli, ["model", "add", str(source)])
    assert result.exit_code == 1
    error_line = result.output.splitlines()[0]
    assert error_line.startswith("Error: ") and message in error_line
    assert "Traceback" not in result.output
    assert _registry().list() == []


def _truncated(good: Path, path: Path) -> Path:
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return path


def _text(path: Path) -> Path:
    path.write_text("These are my notes, not a model.\n" * 20)
    return path


def test_our_header_reader_agrees_with_ggufs_own(tmp_path, tiny_qwen2):
    import gguf

    from assistant.models.gguf_header import read_header

    path = _tiny_gguf(tiny_qwen2, tmp_path, "q4_0")
    theirs, ours = gguf.GGUFReader(path), read_header(path)
    for name, field in theirs.fields.items():
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert ours.fields[name] == len(field.data)  # arrays: their length only
        elif not name.startswith("GGUF."):
            assert ours.fields[name] == pytest.approx(field.contents())
    assert [(t.name, t.tensor_type, t.data_offset) for t in theirs.tensors] == [
        (t.name, t.type, ours.data_offset + t.offset) for t in ours.tensors
    ]
    assert [tuple(int(d) for d in t.shape) for t in theirs.tensors] == [
        t.shape for t in ours.tensors
    ]
    assert ours.data_end() == ours.file_size == path.stat().st_size
