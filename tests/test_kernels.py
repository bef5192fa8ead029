"""Our kernels against their references: torch, Triton (interpreted on the CPU) and MLX."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

# Triton reads this as it defines its kernels (at their first use): without a GPU, interpret.
os.environ.setdefault("TRITON_INTERPRET", "1")

torch = pytest.importorskip("torch")

from assistant.kernels.lora_experts import lora_experts, lora_experts_reference  # noqa: E402
from assistant.kernels.topk_kl import topk_kl, topk_kl_reference  # noqa: E402

FP32 = 1e-5  # relative to the largest reference value
BF16 = 3e-2  # bf16 keeps 8 bits of mantissa; accumulation stays fp32
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_MLX = importlib.util.find_spec("mlx") is not None
PATHS = [
    "torch",
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="no triton")),
]


def relative(value, reference) -> float:
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    return float(np.abs(value - reference).max() / max(np.abs(reference).max(), 1e-30))


# (tokens, d_in, d_out, experts, rank, per-token gates)
LORA_SHAPES = [(5, 7, 9, 3, 1, False), (33, 64, 48, 2, 16, True), (17, 40, 24, 8, 3, False)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", LORA_SHAPES)
def test_fused_lora_experts_match_one_expert_at_a_time(path, shape):
    tokens, d_in, d_out, experts, rank, per_token = shape
    generator = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(tokens, d_in, generator=generator, requires_grad=True)
    a = torch.randn(experts, d_in, rank, generator=generator, requires_grad=True)
    b = torch.randn(experts, rank, d_out, generator=generator, requires_grad=True)
    size = (tokens, experts) if per_token else (experts,)
    gates = torch.rand(size, generator=generator)
    trainable = experts - 1
    fused = lora_experts(x, a, b, gates, trainable, use_triton=path == "triton")
    reference = lora_experts_reference(x, a, b, gates)
    assert relative(fused.detach(), reference.detach()) < FP32
    upstream = torch.randn(fused.shape, generator=generator)
    got = torch.autograd.grad(fused, (x, a, b), upstream)
    want = torch.autograd.grad(reference, (x, a, b), upstream)
    assert relative(got[0], want[0]) < FP32
    for mine, theirs in zip(got[1:], want[1:], strict=True):
        assert relative(mine[trainable], theirs[trainable]) < FP32
        assert not mine[:trainable].any(), "a frozen expert got a gradient"


def test_fused_lora_experts_in_bf16_stay_within_the_stated_bound():
    generator = torch.Generator().manual_seed(0)
    x, a, b = (torch.randn(s, generator=generator) for s in [(16, 64), (4, 64, 8), (4, 8, 32)])
    gates = torch.rand(4, generator=generator)
    fused = lora_experts(*(t.bfloat16() for t in (x, a, b, gates)), trainable=None)
    assert relative(fused.float(), lora_experts_reference(x, a, b, gates)) < BF16


def _distillation_case(rows: int, width: int, vocabulary: int, k: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, width, generator=generator)
    weight = torch.randn(vocabulary, width, generator=generator) / width**0.5
    token_ids = torch.stack(
        [torch.randperm(vocabulary, generator=generator)[:k] for _ in range(rows)]
    )
    teacher = torch.log_softmax(torch.randn(rows, vocabulary, generator=generator), -1)
    return hidden, weight, token_ids, teacher.gather(-1, token_ids)


# (rows, width, vocabulary, k, rows per chunk): vocabularies that are not a multiple of the
# Triton kernel's 1,024-wide blocks, row counts not a multiple of the chunk, k of 1.
LOSS_SHAPES = [(7, 16, 2500, 5, 3), (40, 64, 5003, 32, None), (3, 8, 17, 1, 2)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_chunked_distillation_loss_matches_the_full_logits(path, shape):
    *sizes, rows_per_chunk = shape
    hidden, weight, token_ids, teacher = _distillation_case(*sizes, seed=sum(sizes))
    hidden.requires_grad_(True)
    weight.requires_grad_(True)
    options = dict(rows_per_chunk=rows_per_chunk, use_triton=path == "triton")
    loss = topk_kl(hidden, weight, token_ids, teacher, **options)
    reference = topk_kl_reference(hidden, weight, token_ids, teacher)
    assert relative(loss.detach(), reference.detach()) < FP32
    got = torch.autograd.grad(3.0 * loss, (hidden, weight))
    want = torch.autograd.grad(3.0 * reference, (hidden, weight))
    for mine, theirs in zip(got, want, strict=True):
        assert relative(mine, theirs) < FP32
    with torch.no_grad():  # the evaluation path makes no gradient and gives the same value
        assert relative(topk_kl(hidden, weight, token_ids, teacher, **options), reference) < FP32


@pytest.mark.skipif(not HAS_MLX, reason="mlx is not installed")
@pytest.mark.parametrize("shape", LOSS_SHAPES)
def test_mlx_chunked_loss_matches_the_torch_reference(shape):
    import mlx.core as mx

    from assistant.kernels import mlx_ops

    *sizes, rows_per_chunk = shape
    hidden, weight, token_ids, teacher = _distillation_case(*sizes, seed=sum(sizes))
    hidden.requires_grad_(True)
    reference = topk_kl_reference(hidden, weight, token_ids, teacher)
    (want,) = torch.autograd.grad(2.0 * reference, (hidden,))
    as_mx = [mx.array(t.detach().numpy()) for t in (weight, teacher)]
    ids = mx.array(token_ids.numpy().astype(np.int32))

    def loss(h):
        return 2.0 * mlx_ops.topk_kl(h, as_mx[0], ids, as_mx[1], rows_per_chunk)

    value, got = mx.value_and_grad(loss)(mx.array(hidden.detach().numpy()))
    assert relative(np.array(value), 2.0 * reference.item()) < FP32
    assert relative(np.array(got), want.numpy()) < FP32
    plain = mlx_ops.topk_kl_reference(mx.array(hidden.detach().numpy()), as_mx[0], ids, as_mx[1])
    assert relative(np.array(plain), reference.item()) < FP32


@pytest.mark.skipif(not HAS_MLX, reason="mlx is not installed")
def test_mlx_chunked_loss_and_its_gradient_never_hold_the_full_logits():
    import mlx.core as mx

    from assistant.kernels import mlx_ops

    rows, width, vocabulary = 128, 32, 8192
    hidden, weight, token_ids, teacher = _distillation_case(rows, width, vocabulary, 8, seed=3)
    weight, teacher = mx.array(weight.numpy()), mx.array(teacher.numpy())
    ids = mx.array(token_ids.numpy().astype(np.int32))
    hidden = mx.array(hidden.numpy())
    mx.eval(hidden, weight, ids, teacher)
    step = mx.value_and_grad(lambda h: mlx_ops.topk_kl(h, weight, ids, teacher, 4))
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    mx.eval(step(hidden))
    # A few arrays of one chunk (4 of 128 rows) at a time, not of every chunk.
    full_logits = rows * vocabulary * 4
    assert mx.get_peak_memory() - before < full_logits / 4


@pytest.mark.skipif(not HAS_MLX, reason="mlx is not installed")
@pytest.mark.parametrize("shape", LORA_SHAPES)
def test_mlx_fused_lora_experts_match_the_torch_reference(shape):
    import mlx.core as mx

    from assistant.kernels import mlx_ops

    tokens, d_in, d_out, experts, rank, _ = shape
    rng = np.random.default_rng(sum(shape))
    x, a, b = (rng.standard_normal(s).astype(np.float32) for s in [
        (tokens, d_in), (experts, d_in, rank), (experts, rank, d_out)
    ])  # fmt: skip
    gates = rng.random(experts).astype(np.float32)
    reference = lora_experts_reference(*map(torch.tensor, (x, a, b, gates)))
    fused = mlx_ops.lora_experts(*map(mx.array, (x, a, b, gates)))
    assert relative(np.array(fused), reference.numpy()) < FP32


@pytest.mark.slow
def test_training_on_the_starter_gives_the_same_expert_with_kernels_on_and_off(
    tmp_path, starter_hf
):
    """Tonight's expert over a learned one, trained on the same lessons: the fused experts
    and the chunked loss change the arithmetic's order, not the result."""
    from safetensors.numpy import load

    from assistant.backends.protocol import Continuation, LearnedExpert, Lesson, NewExpert
    from assistant.backends.torch_backend import TorchBackend
    from assistant.experts.peft import PeftAdapter
    from tests.tiny_models import build_lora

    earlier = PeftAdapter.read(build_lora(starter_hf, tmp_path / "e", rank=4, alpha=8, seed=3))
    rng = np.random.default_rng(0)
    prefix = rng.integers(0, 49152, 20).tolist()
    probes = [
        Continuation(rng.integers(0, 49152, 6).tolist(), rng.integers(0, 49152, 12).tolist())
        for _ in range(4)
    ]
    experts, losses, logits = {}, {}, {}
    for kernels in ("off", "on"):
        backend = TorchBackend(
            starter_hf,
            [LearnedExpert(earlier, 0.5)],
            NewExpert(rank=8, alpha=16, seed=1),
            "cpu",
            kernels=kernels,
        )
        assert (backend.fused_experts, backend.chunked_loss) == (kernels == "on",) * 2
        targets = backend.teacher_topk(prefix, probes, k=32)
        lessons = [
            Lesson([1, *p.prompt], p.answer, t) for p, t in zip(probes, targets, strict=True)
        ]
        losses[kernels] = [backend.train_step(lessons, 1e-3) for _ in range(4)]
        experts[kernels] = load(backend.export_expert().weights)
        logits[kernels] = [backend.last_logits([1, *p.prompt]) for p in probes]
        del backend
    assert losses["on"][-1] < losses["on"][0]
    assert relative(losses["on"], losses["off"]) < 1e-4
    assert relative(logits["on"], logits["off"]) < 1e-4
    # Adam's first step moves every weight by the learning rate in its gradient's direction,
    # so a weight whose gradient is ~0 steps either way on rounding alone: the weights are
    # compared as one vector, the expert's answers (logits above) element by element.
    names = sorted(experts["off"])
    on, off = (
        np.concatenate([e[n].ravel() for n in names]) for e in (experts["on"], experts["off"])
    )
    assert np.linalg.norm(on - off) / np.linalg.norm(off) < 1e-3  # measured: 3.2e-4


@pytest.mark.parametrize(
    "backend_name",
    ["torch", pytest.param("mlx", marks=pytest.mark.skipif(not HAS_MLX, reason="no mlx"))],
)
def test_a_backend_trains_alike_with_kernels_on_and_off(tmp_path, tiny_llama, backend_name):
    """Over a learned expert of a smaller rank (zero-padded in the fused stack)."""
    from assistant.backends.choice import load_backend
    from assistant.backends.protocol import Continuation, LearnedExpert, Lesson, NewExpert
    from assistant.experts.peft import PeftAdapter
    from tests.tiny_models import build_lora

    earlier = PeftAdapter.read(build_lora(tiny_llama, tmp_path / "e", rank=4, alpha=8, seed=3))
    probes = [Continuation([3, 14], [15, 92, 65]), Continuation([79, 32], [26, 8])]
    losses = {}
    for kernels in ("off", "on"):
        backend = load_backend(
            backend_name,
            tiny_llama,
            [LearnedExpert(earlier, 0.5)],
            NewExpert(rank=8, alpha=16, seed=1),
            "cpu",
            kernels,
        )
        targets = backend.teacher_topk([5, 17, 42, 8], probes, k=16)
        lessons = [
            Lesson([1, *p.prompt], p.answer, t) for p, t in zip(probes, targets, strict=True)
        ]
        losses[kernels] = [backend.train_step(lessons, 1e-2) for _ in range(5)]
    assert losses["on"][-1] < losses["on"][0]
    assert relative(losses["on"], losses["off"]) < 1e-4


@pytest.mark.parametrize("options", [{"use_dora": True}, {"lora_bias": True}])
def test_layers_with_terms_of_peft_s_own_are_not_fused(options):
    from peft import LoraConfig
    from peft.tuners.lora.layer import Linear

    from assistant.backends.torch_backend import NEW, _fuse_experts

    def lora_layer(**more):
        config = LoraConfig(r=2, lora_alpha=4, **more)
        return Linear(torch.nn.Linear(8, 6), NEW, config, r=2, lora_alpha=4, **more)

    layer, plain = lora_layer(**options), lora_layer()
    _fuse_experts(layer)
    _fuse_experts(plain)
    assert "forward" not in vars(layer)  # PEFT's own forward, with its DoRA or bias term
    assert "forward" in vars(plain)
