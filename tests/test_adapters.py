"""`assistant adapters` on a tiny Llama with three random experts imported through the registry:
exports load in peft, llama.cpp and mlx-lm with the same logits; compression reports its
error; reset is exact and crash-safe; foreign adapters for another base are refused."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from assistant.cli import cli
from tests.tiny_models import build_lora, build_model, relative_error

PROMPT = "<|im_start|>user\nMy dog is called Rex. What is my dog called?<|im_end|>\n"


def _invoke(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def _model(home: Path):
    from assistant.runtime import Runtime

    runtime = Runtime()
    return runtime, runtime.require_model()


def _torch_teacher_logits(runtime, hf_dir: Path, experts) -> tuple[np.ndarray, list[int]]:
    """Our training backend's view of base + experts (the new expert is a no-op)."""
    from transformers import AutoTokenizer

    from assistant.backends.protocol import LearnedExpert
    from assistant.backends.torch_backend import TorchBackend

    tokens = AutoTokenizer.from_pretrained(hf_dir)(PROMPT)["input_ids"]
    learned = [
        LearnedExpert(runtime.experts.open(runtime.memory, e).adapter(), e.scale) for e in experts
    ]
    backend = TorchBackend(hf_dir, learned, device="cpu")
    return backend.last_logits(tokens, student=False).astype(np.float64), tokens


def _peft_logits(hf_dir: Path, adapter_dir: Path, tokens: list[int]) -> np.ndarray:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0, -1].double().numpy()


def test_imported_experts_are_listed_with_what_they_hold(learned_home: Path) -> None:
    rows = json.loads(_invoke("adapters", "list", "--json").stdout)
    assert [r["rank"] for r in rows] == [4, 8, 4]
    assert [r["scale"] for r in rows] == [1.0, 0.5, 0.75]
    assert all(r["status"] == "active" and r["size_bytes"] > 0 for r in rows)
    assert rows[0]["target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    assert rows[1]["summary"] == "Imported from lora1."
    shown = json.loads(_invoke("adapters", "show", "2").stdout)
    assert shown["id"] == 2 and shown["origin"] == "import:lora1"
    missing = CliRunner().invoke(cli, ["adapters", "show", "9"])
    assert missing.exit_code == 1 and "No expert 9" in missing.output


def test_peft_export_loads_in_peft_with_our_backends_logits(
    learned_home: Path, tmp_path: Path
) -> None:
    runtime, model = _model(learned_home)
    experts = runtime.experts.active(model.name)
    refused = CliRunner().invoke(cli, ["adapters", "export", str(tmp_path / "no")], input="n\n")
    assert refused.exit_code == 1 and "can reveal what it learned" in refused.output
    assert not (tmp_path / "no").exists()

    _invoke("adapters", "export", str(tmp_path / "merged"), "--yes")
    reference, tokens = _torch_teacher_logits(runtime, model.hf_dir, experts)
    merged = _peft_logits(model.hf_dir, tmp_path / "merged", tokens)
    assert relative_error(merged, reference) < 1e-4
    config = json.loads((tmp_path / "merged" / "adapter_config.json").read_text())
    assert config["r"] == 16  # 4 + 8 + 4: the merge is exact

    _invoke("adapters", "export", str(tmp_path / "each"), "--each", "--yes")
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == [
        "expert-1",
        "expert-2",
        "expert-3",
    ]
    single, _ = _torch_teacher_logits(runtime, model.hf_dir, experts[1:2])
    assert (
        relative_error(_peft_logits(model.hf_dir, tmp_path / "each/expert-2", tokens), single)
        < 1e-4
    )
    taken = CliRunner().invoke(cli, ["adapters", "export", str(tmp_path / "each"), "--yes"])
    assert taken.exit_code == 1 and "not empty" in taken.output


def test_gguf_export_loads_in_plain_llama_cpp_like_our_multi_expert_engine(
    learned_home: Path, tmp_path: Path
) -> None:
    import llama_cpp

    runtime, model = _model(learned_home)
    _invoke("adapters", "export", str(tmp_path / "gguf"), "--format", "gguf", "--yes")
    engine = runtime.load_engine()
    tokens = engine.tokenize(PROMPT)
    ours = engine.last_logits(tokens).astype(np.float64)
    engine.close()
    plain = llama_cpp.Llama(
        model_path=str(model.gguf_path),
        lora_path=str(tmp_path / "gguf" / "adapter.gguf"),
        n_ctx=256,
        logits_all=True,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        verbose=False,
    )
    plain.eval(tokens)
    theirs = np.array(plain.scores[plain.n_tokens - 1], dtype=np.float64)
    plain.close()
    assert relative_error(theirs, ours) < 1e-3
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text()
    assert f"FROM {model.gguf_path}" in modelfile and "ADAPTER ./adapter.gguf" in modelfile


def test_mlx_export_loads_in_mlx_lm_with_the_torch_logits(
    learned_home: Path, tmp_path: Path
) -> None:
    mx = pytest.importorskip("mlx.core")
    mlx_lm = pytest.importorskip("mlx_lm")

    runtime, model = _model(learned_home)
    _invoke("adapters", "export", str(tmp_path / "mlx"), "--format", "mlx", "--yes")
    reference, tokens = _torch_teacher_logits(
        runtime, model.hf_dir, runtime.experts.active(model.name)
    )
    mx.set_default_device(mx.cpu)
    mlx_model, _ = mlx_lm.load(str(model.hf_dir), adapter_path=str(tmp_path / "mlx"))
    logits = mlx_model(mx.array([tokens]))[0, -1].astype(mx.float32)
    assert relative_error(np.array(logits, dtype=np.float64), reference) < 1e-3


def test_rank_compression_reports_the_error_of_the_dropped_singular_values(
    learned_home: Path, tmp_path: Path
) -> None:
    from assistant.adapters.lora import read_update
    from assistant.experts.peft import PeftAdapter

    _invoke("adapters", "export", str(tmp_path / "exact"), "--yes")
    result = _invoke("adapters", "export", str(tmp_path / "r3"), "--rank", "3", "--yes", "--json")
    (reported,) = json.loads(result.stdout)
    assert reported["rank"] == 3
    errors = reported["errors"]
    info = json.loads((tmp_path / "r3" / "export.json").read_text())
    assert info["relative_error_per_layer"] == errors
    exact = read_update(PeftAdapter.read(tmp_path / "exact"))
    compressed = read_update(PeftAdapter.read(tmp_path / "r3"))
    assert set(errors) == set(exact.pairs) and len(errors) == 2 * 7
    for module, error in errors.items():
        delta = exact.delta(module)
        singular = np.linalg.svd(delta, compute_uv=False)
        dropped = np.sqrt(np.sum(singular[3:] ** 2) / np.sum(singular**2))
        actual = np.linalg.norm(delta - compressed.delta(module)) / np.linalg.norm(delta)
        assert error == pytest.approx(dropped, rel=1e-4)
        assert actual == pytest.approx(dropped, rel=1e-3)
        assert 0 < error < 1


def _db_rows(home: Path, table: str) -> int:
    with sqlite3.connect(home / "data" / "assistant.db") as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_reset_one_then_all_returns_to_the_base_model_exactly(learned_home: Path) -> None:
    from assistant.engine import ChatEngine

    runtime, model = _model(learned_home)
    experts = runtime.experts.active(model.name)
    base = ChatEngine(model.gguf_path, n_ctx=256)
    tokens = base.tokenize(PROMPT)
    base_logits = base.last_logits(tokens)
    base.set_experts(
        [runtime.experts.chat_spec(runtime.memory, e) for e in (experts[0], experts[2])]
    )
    remaining_logits = base.last_logits(tokens)
    base.close()

    refused = CliRunner().invoke(cli, ["adapters", "reset", "2"], input="n\n")
    assert refused.exit_code == 1 and _db_rows(learned_home, "experts") == 3
    _invoke("adapters", "reset", "2", "--yes")
    assert not experts[1].directory.exists()
    engine = runtime.load_engine()
    assert len(engine.experts) == 2
    np.testing.assert_allclose(engine.last_logits(tokens), remaining_logits, rtol=0, atol=1e-6)
    engine.close()

    _invoke("adapters", "reset", "--all", "--yes")
    engine = runtime.load_engine()
    np.testing.assert_array_equal(engine.last_logits(tokens), base_logits)
    engine.close()
    assert _db_rows(learned_home, "experts") == 0 and _db_rows(learned_home, "expert_probes") == 0
    assert list(runtime.paths.experts_dir.iterdir()) == []


@pytest.mark.parametrize("point", ["reset-marked", "reset-files"])
def test_a_killed_reset_is_finished_by_the_next(learned_home: Path, point: str) -> None:
    from assistant.faults import CRASH_ENV

    env = {**os.environ, "ASSISTANT_HOME": str(learned_home), CRASH_ENV: point}
    command = [sys.executable, "-m", "assistant", "adapters", "reset", "--all", "--yes"]
    killed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    runtime, model = _model(learned_home)
    assert runtime.experts.active(model.name) == []  # chat stops applying them at once
    listed = json.loads(_invoke("adapters", "list", "--json").stdout)
    assert {row["status"] for row in listed} == {"removing"}
    _invoke("adapters", "reset", "--all", "--yes")
    assert _db_rows(learned_home, "experts") == 0 and _db_rows(learned_home, "expert_probes") == 0
    assert list(runtime.paths.experts_dir.iterdir()) == []


def _rewrite_adapter(src: Path, dst: Path, *, base: str | None = None, cut: int = 0) -> Path:
    """A copy of ``src`` naming another base, or with A matrices cut to the wrong width."""
    from safetensors.numpy import load_file, save_file

    dst.mkdir()
    config = json.loads((src / "adapter_config.json").read_text())
    if base is not None:
        config["base_model_name_or_path"] = base
    (dst / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(src / "adapter_model.safetensors")
    if cut:
        tensors = {k: (v[:, :-cut] if ".lora_A." in k else v) for k, v in tensors.items()}
    save_file(tensors, dst / "adapter_model.safetensors")
    return dst


def test_import_refuses_an_adapter_for_another_base_or_shape(
    model_home: Path, tiny_llama: Path, foreign_adapters: list[Path], tmp_path: Path
) -> None:
    other = build_model(tmp_path / "other-llama", "llama", seed=7)  # same shapes, other weights
    cases = {
        "whose weights differ": build_lora(other, tmp_path / "other", 4, 8.0, seed=1),
        "--trust-base": _rewrite_adapter(
            foreign_adapters[0], tmp_path / "named", base="someone/another-model"
        ),
        "made for another model": _rewrite_adapter(foreign_adapters[0], tmp_path / "narrow", cut=8),
        "not a PEFT adapter": tmp_path / "other-llama",
    }
    for message, adapter in cases.items():
        result = CliRunner().invoke(cli, ["adapters", "import", str(adapter)])
        assert result.exit_code == 1, result.output
        assert message in result.output
    assert _db_rows(model_home, "experts") == 0
    assert list((model_home / "data" / "experts").glob("*")) == []
    trusted = CliRunner().invoke(
        cli, ["adapters", "import", str(tmp_path / "named"), "--trust-base"]
    )
    assert trusted.exit_code == 0, trusted.output


@pytest.mark.asyncio
async def test_the_adapters_screen_lists_exports_and_forgets(
    learned_home: Path, tmp_path: Path
) -> None:
    from textual.widgets import DataTable, Input, Select

    from assistant.runtime import Runtime
    from assistant.tui.adapters import AdaptersScreen, ConfirmDialog, ExportDialog
    from assistant.tui.app import AssistantApp
    from tests.test_tui import ready, wait_until

    app = AssistantApp(Runtime())
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot)
        assert len(app.engine.experts) == 3
        await pilot.press("f2")
        assert isinstance(app.screen, AdaptersScreen)
        table = app.screen.query_one("#experts", DataTable)
        await wait_until(pilot, lambda: table.row_count == 3)
        details = app.screen.query_one("#expert-details")
        await wait_until(pilot, lambda: "Imported from lora0" in str(details.content))

        await pilot.press("e")
        assert isinstance(app.screen, ExportDialog)
        app.screen.query_one("#export-path", Input).value = str(tmp_path / "from-tui")
        app.screen.query_one("#export-format", Select).value = "gguf"
        await pilot.click("#export-go")
        await wait_until(pilot, lambda: (tmp_path / "from-tui" / "adapter.gguf").is_file())

        table.focus()
        await pilot.press("down", "f")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.click("#confirm-yes")
        await wait_until(pilot, lambda: table.row_count == 2)
        assert [e.id for e in app.runtime.experts.active("tiny")] == [1, 3]
        assert len(app.engine.experts) == 2
        await pilot.press("escape")
        assert not isinstance(app.screen, AdaptersScreen)
