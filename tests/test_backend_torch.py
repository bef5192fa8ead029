"""The torch backend on tiny random models: views, cached-prefix targets, training, export."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.backends.protocol import Continuation, LearnedExpert, Lesson, NewExpert
from assistant.backends.torch_backend import TorchBackend, pick_device
from assistant.errors import ModelError
from assistant.experts.peft import PeftAdapter
from tests.tiny_models import TOLERANCE, build_lora, hf_logits, hf_tokens, relative_error

PREFIX = [5, 17, 42, 8, 99, 23, 61]
CONTINUATIONS = [
    Continuation([3, 14], [15, 92, 65]),
    Continuation([], [35, 89]),
    Continuation([79, 32, 38, 46], [26]),
]


def _full_sequence_topk(backend: TorchBackend, probe: Continuation, k: int):
    """Reference without any cache: the whole sequence in one forward pass."""
    import torch

    tokens = [*PREFIX, *probe.prompt, *probe.answer]
    with torch.no_grad():
        logits = backend.model(input_ids=torch.tensor([tokens])).logits[0]
    start = len(PREFIX) + len(probe.prompt) - 1
    scored = torch.log_softmax(logits[start : start + len(probe.answer)], dim=-1)
    return scored.topk(k, dim=-1)


def test_a_new_expert_starts_as_a_no_op_and_the_views_share_the_base(tiny_llama):
    from transformers import AutoModelForCausalLM

    backend = TorchBackend(tiny_llama, device="cpu")
    tokens = hf_tokens(tiny_llama)
    reference = hf_logits(AutoModelForCausalLM.from_pretrained(tiny_llama), tokens)
    assert relative_error(backend.last_logits(tokens, student=False), reference) < 1e-5
    assert relative_error(backend.last_logits(tokens, student=True), reference) < 1e-5


@pytest.mark.parametrize("family", ["tiny_llama", "tiny_qwen2"])
def test_teacher_targets_with_a_cached_prefix_equal_a_full_forward_pass(request, family):
    backend = TorchBackend(request.getfixturevalue(family), device="cpu")
    targets = backend.teacher_topk(PREFIX, CONTINUATIONS, k=8)
    for probe, target in zip(CONTINUATIONS, targets, strict=True):
        reference = _full_sequence_topk(backend, probe, 8)
        assert target.token_ids.shape == (len(probe.answer), 8)
        np.testing.assert_array_equal(target.token_ids, reference.indices.numpy())
        np.testing.assert_allclose(target.logprobs, reference.values.numpy(), atol=1e-5)


def test_training_moves_only_the_new_expert_towards_the_teacher(tmp_path, tiny_llama):
    import torch

    earlier = build_lora(tiny_llama, tmp_path / "earlier", rank=4, alpha=8, seed=3)
    backend = TorchBackend(
        tiny_llama,
        [LearnedExpert(PeftAdapter.read(earlier), 0.5)],
        NewExpert(rank=8, alpha=16, seed=1),
        "cpu",
    )
    frozen = {
        name: param.detach().clone()
        for name, param in backend.model.named_parameters()
        if not param.requires_grad
    }
    assert frozen and all(".tonight." not in name for name in frozen)
    # The teacher sees the prefix (the "memories"); the student must answer without it.
    targets = backend.teacher_topk(PREFIX, CONTINUATIONS, k=16)
    lessons = [
        Lesson([1, *probe.prompt], probe.answer, target)
        for probe, target in zip(CONTINUATIONS, targets, strict=True)
    ]
    losses = [backend.train_step(lessons, learning_rate=3e-2) for _ in range(30)]
    # A rank-8 expert on a tiny random model levels off near a fifth of the starting KL.
    assert losses[-1] < 0.3 * losses[0]
    for name, param in backend.model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name
    # The teacher view is untouched by training; the student's answers now follow the teacher.
    assert backend.teacher_topk(PREFIX, CONTINUATIONS[:1], k=16)[0].token_ids.tolist() == (
        targets[0].token_ids.tolist()
    )
    student_best = backend.last_logits([1, *CONTINUATIONS[0].prompt], student=True).argmax()
    assert student_best == targets[0].token_ids[0, 0]


def test_the_saved_expert_gives_the_same_logits_in_llama_cpp(tmp_path, tiny_llama):
    from assistant.engine import ChatEngine, ExpertSpec
    from assistant.experts.lora_gguf import gguf_lora
    from assistant.models.convert import convert_to_gguf
    from assistant.models.hf_weights import read_config

    backend = TorchBackend(tiny_llama, new_expert=NewExpert(rank=4, alpha=8, seed=2), device="cpu")
    targets = backend.teacher_topk(PREFIX, CONTINUATIONS, k=16)
    lessons = [
        Lesson([1, *p.prompt], p.answer, t) for p, t in zip(CONTINUATIONS, targets, strict=True)
    ]
    for _ in range(5):
        backend.train_step(lessons, learning_rate=3e-2)
    adapter = backend.export_expert()

    tokens = hf_tokens(tiny_llama)
    student = backend.last_logits(tokens, student=True)
    assert relative_error(student, backend.last_logits(tokens, student=False)) > 10 * TOLERANCE
    lora = gguf_lora(adapter, read_config(tiny_llama))
    engine = ChatEngine(  # loaded from a private memory file: no plaintext file is written
        convert_to_gguf(tiny_llama, tmp_path / "base.gguf", "base"),
        [ExpertSpec(tmp_path / "sealed-expert", 1.0, read=lambda: lora)],
        n_ctx=256,
    )
    try:
        assert relative_error(engine.last_logits(tokens), student) < TOLERANCE
    finally:
        engine.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.gguf"]
    # Tomorrow night the expert is a learned one: the next teacher starts from it.
    tomorrow = TorchBackend(tiny_llama, [LearnedExpert(adapter)], device="cpu")
    assert relative_error(tomorrow.last_logits(tokens, student=False), student) < 1e-5
    # Exported, it is a PEFT folder that peft itself loads to the same logits.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    exported = PeftModel.from_pretrained(base, adapter.write(tmp_path / "export"))
    assert relative_error(hf_logits(exported, tokens), student) < 1e-5


def test_a_device_that_is_not_there_is_a_clear_error():
    import torch

    assert pick_device("auto") in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="no cuda device"):
            pick_device("cuda")
    with pytest.raises(ModelError, match="Unknown device"):
        pick_device("tpu")


def test_the_shared_start_of_a_batch_runs_once_and_changes_nothing(tiny_llama):
    """A batch's common prompt start is computed once: every lesson's KL (and gradient) is
    what it is alone, and a padded batch agrees with an unpadded one."""
    import torch

    backend = TorchBackend(tiny_llama, new_expert=NewExpert(rank=4, alpha=8, seed=2), device="cpu")
    targets = backend.teacher_topk(PREFIX, CONTINUATIONS, k=16)
    shared_start = [1, 7, 7, 9]  # like a system turn
    lessons = [
        Lesson([*shared_start, *c.prompt, 11], c.answer, t)
        for c, t in zip(CONTINUATIONS, targets, strict=True)
    ]
    backend.train_step(lessons, learning_rate=3e-2)  # a non-zero expert
    alone = [backend._kl_sum([lesson]).item() for lesson in lessons]
    together = backend._kl_sum(lessons).item()
    assert abs(together - sum(alone)) < 1e-4 * max(1.0, abs(together))

    def gradients(batch):
        backend.model.zero_grad(set_to_none=True)
        backend._kl_sum(batch).backward()
        return {n: p.grad.clone() for n, p in backend._new_params.items()}

    separately = [gradients([lesson]) for lesson in lessons]
    jointly = gradients(lessons)
    for name, grad in jointly.items():
        expected = sum(g[name] for g in separately)
        assert torch.allclose(grad, expected, atol=1e-5, rtol=1e-4), name
