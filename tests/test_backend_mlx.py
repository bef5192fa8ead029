"""The MLX backend against the torch backend, on MLX's CPU device: the same numbers either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from assistant.backends.protocol import LearnedExpert, Lesson, NewExpert
from assistant.experts.peft import PeftAdapter
from tests.test_backend_torch import CONTINUATIONS, PREFIX
from tests.tiny_models import TOLERANCE, build_lora, hf_logits, hf_tokens, relative_error

pytest.importorskip("mlx_lm")

NEW = NewExpert(rank=8, alpha=16, seed=1)
# float32 on both sides, through the same layers in a different order of sums.
SAME = 1e-4


def _pair(model_dir: Path, learned: list[LearnedExpert], new: NewExpert = NEW):
    """A torch and an MLX backend on the same base, experts and starting weights of
    tonight's expert (each backend draws its own from the seed, so MLX takes torch's)."""
    from assistant.backends.mlx_backend import MlxBackend
    from assistant.backends.torch_backend import TorchBackend

    torch_backend = TorchBackend(model_dir, learned, new, "cpu")
    mlx_backend = MlxBackend(model_dir, learned, new, "cpu")
    _copy_tonight(torch_backend, mlx_backend)
    return torch_backend, mlx_backend


def _copy_tonight(torch_backend, mlx_backend) -> None:
    """Give MLX tonight's expert as torch has it now."""
    import mlx.core as mx

    from assistant.backends.mlx_backend import PEFT_PREFIX

    weights = torch_backend.export_expert().tensors()
    for path, layer in mlx_backend._tonight.items():
        layer.lora_a = mx.array(weights[f"{PEFT_PREFIX}{path}.lora_A.weight"].T.copy())
        layer.lora_b = mx.array(weights[f"{PEFT_PREFIX}{path}.lora_B.weight"].T.copy())


def _lessons(backend, start: tuple[int, ...] = (1,)) -> list[Lesson]:
    """Lessons whose prompts begin with ``start`` (with more than one token, a shared start
    like a system turn: run once, its keys and values repeated for the batch)."""
    targets = backend.teacher_topk(PREFIX, CONTINUATIONS, k=16)
    return [
        Lesson([*start, *c.prompt, 11], c.answer, t)
        for c, t in zip(CONTINUATIONS, targets, strict=True)
    ]


def _whole_relative_error(ours: PeftAdapter, reference: PeftAdapter) -> float:
    """||ours - reference|| / ||reference|| over every tensor of the expert."""
    a, b = ours.tensors(), reference.tensors()
    assert a.keys() == b.keys()
    difference = sum(float(((a[k] - b[k]) ** 2).sum()) for k in b)
    return float(np.sqrt(difference / sum(float((b[k] ** 2).sum()) for k in b)))


@pytest.fixture(scope="module")
def learned_llama(tmp_path_factory, tiny_llama) -> list[LearnedExpert]:
    folder = build_lora(tiny_llama, tmp_path_factory.mktemp("lora") / "a", rank=4, alpha=8, seed=3)
    return [LearnedExpert(PeftAdapter.read(folder), 0.5)]


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_mlx_gives_torchs_logits_with_learned_experts(request, tmp_path, family):
    model_dir = request.getfixturevalue(family)
    learned = [
        LearnedExpert(PeftAdapter.read(build_lora(model_dir, tmp_path / "a", 4, 8, seed=3)), 0.5),
        LearnedExpert(
            PeftAdapter.read(build_lora(model_dir, tmp_path / "b", 2, 8, seed=4, rslora=True))
        ),
    ]
    torch_backend, mlx_backend = _pair(model_dir, learned)
    torch_backend.train_step(_lessons(torch_backend), 3e-2)  # tonight's B is no longer zero
    _copy_tonight(torch_backend, mlx_backend)
    tokens = hf_tokens(model_dir)
    assert (
        relative_error(
            torch_backend.last_logits(tokens, student=True),
            torch_backend.last_logits(tokens, student=False),
        )
        > 100 * SAME
    )  # so the student view really has tonight's expert to apply
    for student in (False, True):
        reference = torch_backend.last_logits(tokens, student=student)
        assert relative_error(mlx_backend.last_logits(tokens, student=student), reference) < SAME
    # The learned experts really act: without them the logits are far off.
    from assistant.backends.mlx_backend import MlxBackend

    bare = MlxBackend(model_dir, [], NEW, "cpu").last_logits(tokens, student=False)
    assert relative_error(bare, torch_backend.last_logits(tokens, student=False)) > 100 * SAME


@pytest.mark.slow
def test_mlx_gives_torchs_logits_on_the_starter(starter_hf: Path, tmp_path: Path):
    learned = [LearnedExpert(PeftAdapter.read(build_lora(starter_hf, tmp_path / "a", 4, 8, 3)))]
    torch_backend, mlx_backend = _pair(starter_hf, learned)
    tokens = hf_tokens(starter_hf)
    reference = torch_backend.last_logits(tokens, student=False)
    assert relative_error(mlx_backend.last_logits(tokens, student=False), reference) < SAME


def test_teacher_targets_with_a_cached_prefix_equal_a_full_forward_pass(tiny_qwen2):
    import mlx.core as mx

    from assistant.backends.mlx_backend import MlxBackend

    backend = MlxBackend(tiny_qwen2, [], NEW, "cpu")
    targets = backend.teacher_topk(PREFIX, CONTINUATIONS, k=8)
    for probe, target in zip(CONTINUATIONS, targets, strict=True):
        logits = backend.model(mx.array([[*PREFIX, *probe.prompt, *probe.answer]]))[0]
        scored = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
        start = len(PREFIX) + len(probe.prompt) - 1
        scored = scored[start : start + len(probe.answer)]
        best = np.argsort(-scored, axis=-1)[:, :8]
        np.testing.assert_array_equal(target.token_ids, best)
        np.testing.assert_allclose(
            target.logprobs, np.take_along_axis(scored, best, axis=-1), atol=1e-5
        )


@pytest.mark.parametrize(("learning_rate", "start"), [(1e-3, (1,)), (3e-2, (1, 7, 7, 9))])
def test_one_training_step_updates_the_expert_as_torch_does(
    tiny_llama, learned_llama, learning_rate, start
):
    """Compared over the whole expert: AdamW's first step is lr * g / (|g| + eps), so where a
    gradient is near zero the two sums' last-bit differences move a single element visibly
    (measured: 1.4e-4 of the largest element in one tensor, 1e-6 over the whole expert)."""
    torch_backend, mlx_backend = _pair(tiny_llama, learned_llama)
    lessons = _lessons(torch_backend, start)
    assert _lessons(mlx_backend, start)[0].targets.token_ids.tolist() == (
        lessons[0].targets.token_ids.tolist()
    )
    before = torch_backend.export_expert()
    torch_loss = torch_backend.train_step(lessons, learning_rate)
    mlx_loss = mlx_backend.train_step(lessons, learning_rate)
    assert mlx_loss == pytest.approx(torch_loss, rel=SAME)
    after = torch_backend.export_expert()
    assert _whole_relative_error(mlx_backend.export_expert(), after) < SAME
    assert _whole_relative_error(after, before) > 100 * SAME  # the step moved the expert
    assert mlx_backend.divergence(lessons) == pytest.approx(
        torch_backend.divergence(lessons), rel=SAME
    )


def test_the_gradients_of_the_loss_are_torchs(tiny_llama, learned_llama):
    """The gradient of the mean KL for every tensor of tonight's expert, A and B, on a batch
    with a shared start (its keys and values repeated for the batch) and padding."""
    from mlx.utils import tree_flatten

    torch_backend, mlx_backend = _pair(tiny_llama, learned_llama)
    lessons = _lessons(torch_backend, (1, 7, 7, 9))
    torch_backend.train_step(lessons, 3e-2)  # B non-zero, so A has a gradient too
    _copy_tonight(torch_backend, mlx_backend)
    torch_backend.model.zero_grad(set_to_none=True)
    tokens = sum(len(lesson.answer) for lesson in lessons)
    (torch_backend._kl_sum(lessons) / tokens).backward()
    theirs = {
        name.removeprefix("base_model.model.")
        .replace(".lora_A.tonight.weight", ".lora_a")
        .replace(".lora_B.tonight.weight", ".lora_b"): param.grad.numpy().T
        for name, param in torch_backend._new_params.items()
    }
    _, grads = mlx_backend._loss_and_grad(lessons)
    ours = {name: np.array(grad) for name, grad in tree_flatten(grads)}
    assert ours.keys() == theirs.keys() and len(ours) == 2 * 7 * 2
    for name, grad in theirs.items():
        assert np.abs(grad).max() > 0, name
        assert relative_error(ours[name], grad) < SAME, name


def test_a_training_state_from_elsewhere_is_refused(tiny_llama):
    from assistant.backends.mlx_backend import MlxBackend
    from assistant.backends.torch_backend import TorchBackend
    from assistant.errors import ModelError

    torch_state = TorchBackend(tiny_llama, [], NEW, "cpu").training_state()
    other_rank = MlxBackend(tiny_llama, [], NewExpert(rank=4, alpha=8), "cpu").training_state()
    backend = MlxBackend(tiny_llama, [], NEW, "cpu")
    with pytest.raises(ModelError, match="not MLX's"):
        backend.restore_training_state(torch_state)
    with pytest.raises(ModelError, match="its layers or rank"):
        backend.restore_training_state(other_rank)


def test_an_mlx_trained_expert_loads_in_peft_and_in_our_chat_engine(tmp_path, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from assistant.backends.mlx_backend import MlxBackend
    from assistant.engine import ChatEngine, ExpertSpec
    from assistant.models.convert import convert_to_gguf
    from assistant.models.hf_weights import read_config
    from assistant.sleep.seeding import export_expert

    backend = MlxBackend(tiny_llama, [], NewExpert(rank=4, alpha=8, seed=2), "cpu")
    lessons = _lessons(backend)
    for _ in range(5):
        backend.train_step(lessons, learning_rate=3e-2)
    adapter, lora = export_expert(backend, read_config(tiny_llama))
    tokens = hf_tokens(tiny_llama)
    student = backend.last_logits(tokens, student=True)
    assert relative_error(student, backend.last_logits(tokens, student=False)) > 10 * TOLERANCE

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    exported = PeftModel.from_pretrained(base, adapter.write(tmp_path / "export"))
    assert relative_error(hf_logits(exported, tokens), student) < SAME
    engine = ChatEngine(
        convert_to_gguf(tiny_llama, tmp_path / "base.gguf", "base"),
        [ExpertSpec(tmp_path / "sealed-expert", 1.0, read=lambda: lora)],
        n_ctx=256,
    )
    try:
        assert relative_error(engine.last_logits(tokens), student) < TOLERANCE
    finally:
        engine.close()
    # Tomorrow the expert is a learned one, on either backend.
    tomorrow = MlxBackend(tiny_llama, [LearnedExpert(adapter)], device="cpu")
    assert relative_error(tomorrow.last_logits(tokens, student=False), student) < 1e-5


def test_an_expert_that_does_not_fit_the_model_is_refused(tiny_llama, tiny_qwen2, tmp_path):
    from safetensors.numpy import save

    from assistant.backends.mlx_backend import MlxBackend, pick_device
    from assistant.errors import ModelError

    foreign = PeftAdapter.read(build_lora(tiny_qwen2, tmp_path / "q", 4, 8, seed=1))
    renamed = PeftAdapter(
        foreign.config,
        save({k.replace("layers.1.", "layers.7."): v for k, v in foreign.tensors().items()}),
    )
    with pytest.raises(ModelError, match="layers this model lacks"):
        MlxBackend(tiny_llama, [LearnedExpert(renamed)], device="cpu")
    assert pick_device("auto") in {"cpu", "gpu"}
    with pytest.raises(ModelError, match="no device"):
        pick_device("cuda")


@pytest.mark.slow
@pytest.mark.usefixtures("starter_training_copy")
def test_a_night_trained_with_mlx_is_committed_sealed_and_served_by_chat(home: Path) -> None:
    """A whole night on the starter through the CLI with ``--backend mlx``, as small as a
    night gets: one fact, one anchor, one negative, one step. MLX's CPU device is slow: the
    short night of tests/nights.py (two facts, four anchors) took 6 min with two steps here,
    each step 79 s and each teacher pass 29 s; torch's took 43 s."""
    from assistant.backends.mlx_backend import MlxBackend
    from assistant.runtime import Runtime
    from tests import nights
    from tests.conftest import plaintext_expert_files
    from tests.test_starter import STARTER_TOLERANCE

    smallest = {
        "sleep_steps": 1,
        "sleep_evaluate_every": 1,
        "sleep_anchors": 1,
        "sleep_negatives": 1,
    }
    nights.configure(home, {**nights.GATES_OPEN, **smallest})
    nights.tell(nights.CANARIES[0])
    report = nights.sleep_now("--backend", "mlx")
    assert (report["outcome"], report["backend"]) == ("consolidated", "mlx/cpu")
    assert report["train_steps"] == 1 and report["expert_id"] == 1
    assert nights.count(home, "turns") == 0 and nights.count(home, "epochs") == 0
    assert nights.files_mentioning(home, ("Zorblax", "Quixotic")) == []

    runtime = Runtime()
    model = runtime.require_model()
    (expert,) = runtime.experts.active(model.name)
    adapter = runtime.experts.open(runtime.memory, expert).adapter()
    assert plaintext_expert_files(home, list(adapter.tensors().values())) == []
    assert max(np.abs(w).max() for n, w in adapter.tensors().items() if "lora_B" in n) > 0
    tokens = [1, 504, 3458, 314, 2114, 30, 2]
    reference = MlxBackend(model.hf_dir, [LearnedExpert(adapter)], device="cpu").last_logits(
        tokens, student=False
    )
    engine = runtime.load_engine()
    served = engine.last_logits(tokens)
    engine.close()
    runtime.database.close()
    # llama.cpp serves the quantized starter file: STARTER_TOLERANCE is that rounding.
    assert relative_error(served, reference) < STARTER_TOLERANCE
