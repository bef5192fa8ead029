"""The MLX backend: mlx + mlx-lm on Apple silicon (Metal), or on MLX's CPU device elsewhere.

It computes what the torch backend computes, so the same starting expert and
lessons give the same expert on either (each draws its starting weights and
its samples from its own random generator): every expert is a LoRA on the same linear layers with
PEFT's scaling (``lora_alpha / r``), the learned ones frozen at their scales
and tonight's trainable; the teacher view sets tonight's scale to zero; the
loss is the same top-k KL; the optimizer is AdamW with torch's semantics
(bias correction, no weight decay, gradients clipped to norm 1).

From mlx-lm: the model definitions and loading (``load_model``), the LoRA
layer (``LoRALinear``, stacked once per expert), the key-value cache and its
trimming, generation (``generate_step`` with ``make_sampler``). Ours: stacking
several experts at their scales, the teacher/student views, the top-k targets
with the prefix computed once, the distillation loss and step, the training
state, and the conversion to and from PEFT's layout (our interchange format).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from assistant.backends.protocol import (
    Continuation,
    LearnedExpert,
    Lesson,
    NewExpert,
    TopK,
    pack,
)
from assistant.errors import ModelError
from assistant.experts.lora_gguf import read_peft_adapter
from assistant.experts.peft import PeftAdapter
from assistant.kernels import mlx_ops

PEFT_PREFIX = "base_model.model."  # PEFT's name for the wrapped model, before each module path


def pick_device(requested: str = "auto") -> str:
    """The MLX device for ``auto|cpu|gpu`` (the GPU is Metal on a Mac); a clear error if absent."""
    import mlx.core as mx

    has_gpu = mx.is_available(mx.gpu)
    if requested == "auto":
        return "gpu" if has_gpu else "cpu"
    if requested not in ("cpu", "gpu"):
        raise ModelError(
            f"MLX has no device {requested!r}.", hint="Use --device auto, cpu or gpu with MLX."
        )
    if requested == "gpu" and not has_gpu:
        raise ModelError("MLX sees no GPU here.", hint="Use --device auto or cpu.")
    return requested


class MlxBackend:
    name = "mlx"

    def __init__(
        self,
        model_dir: Path,
        learned: Sequence[LearnedExpert] = (),
        new_expert: NewExpert | None = None,
        device: str = "auto",
        kernels: str = "auto",
    ) -> None:
        import mlx.core as mx
        import mlx.nn as nn
        import mlx.optimizers as optim
        from mlx_lm.utils import load_model

        new_expert = new_expert or NewExpert()
        self.device = pick_device(device)
        mx.set_default_device(mx.gpu if self.device == "gpu" else mx.cpu)
        self._mx = mx
        model, config = load_model(Path(model_dir), model_config=_rope_in_mlx_terms(model_dir))
        model.set_dtype(mx.float32)
        linears = {
            path: module for path, module in model.named_modules() if isinstance(module, nn.Linear)
        }
        for expert in learned:
            _stack(model, linears, *_frozen_layers(expert))
        mx.random.seed(new_expert.seed)
        scale = new_expert.alpha / new_expert.rank
        tonight = {
            path: None for path in linears if path.rsplit(".", 1)[-1] in new_expert.target_modules
        }
        if not tonight:
            raise ModelError(
                f"This model has none of the layers an expert trains ({new_expert.target_modules})."
            )
        self._tonight = _stack(model, linears, tonight, new_expert.rank, scale)
        self._config = _peft_config(new_expert, sorted({p.rsplit(".", 1)[-1] for p in tonight}))
        model.freeze()
        for layer in self._tonight.values():
            layer.unfreeze(keys=["lora_a", "lora_b"], recurse=False)
        self.model = model
        # Only the chunked loss is wired in here: the fused experts were 1.2-4x slower than
        # mlx-lm's stacked LoRA layers on MLX's CPU device. auto leaves the loss off: it saves
        # memory at the same speed there, and nobody has measured it on Metal yet.
        self.kernels = kernels == "on"
        self._tied = bool(getattr(model.args, "tie_word_embeddings", False))
        # torch's AdamW: bias-corrected, here without weight decay, like the torch backend.
        self._optimizer = optim.AdamW(
            learning_rate=1e-4,
            betas=[0.9, 0.999],
            eps=1e-8,
            weight_decay=0.0,
            bias_correction=True,
        )
        self._loss_and_grad = nn.value_and_grad(model, self._mean_kl)
        mx.eval(model.parameters())

    # -- the two views -----------------------------------------------------------
    @contextmanager
    def _view(self, student: bool) -> Iterator[None]:
        """Teacher: tonight's expert is scaled by zero. Student: as trained."""
        scale = next(iter(self._tonight.values())).scale
        if not student:
            for layer in self._tonight.values():
                layer.scale = 0.0
        try:
            yield
        finally:
            for layer in self._tonight.values():
                layer.scale = scale

    def _output_matrix(self):
        """The (vocabulary, hidden) matrix that makes logits: the tied embedding or the head."""
        if self._tied:
            return self.model.model.embed_tokens.weight
        return self.model.lm_head.weight

    def _project(self, hidden):
        """Hidden states to vocabulary logits."""
        return hidden @ self._output_matrix().T

    # -- inference -----------------------------------------------------------------
    def last_logits(self, tokens: Sequence[int], *, student: bool = True) -> np.ndarray:
        mx = self._mx
        with self._view(student):
            logits = self.model(mx.array([list(tokens)]))[0, -1].astype(mx.float32)
            return np.array(logits)

    def teacher_topk(
        self, prefix: Sequence[int], continuations: Sequence[Continuation], k: int
    ) -> list[TopK]:
        """Runs the prefix once, then each continuation on its cached keys and values (trimmed
        back after it). Only the positions that predict answer tokens are projected to the
        vocabulary."""
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        mx = self._mx
        targets: list[TopK] = []
        with self._view(student=False):
            cache = make_prompt_cache(self.model)
            after_prefix = self.model.model(mx.array([list(prefix)]), cache=cache)[0, -1:]
            for probe in continuations:
                sequence = [*probe.prompt, *probe.answer]
                hidden = self.model.model(mx.array([sequence]), cache=cache)[0]
                # Position i predicts token i+1; the prefix's last position predicts the first.
                answering = mx.concatenate([after_prefix, hidden])[len(probe.prompt) :]
                logits = self._project(answering[: len(probe.answer)]).astype(mx.float32)
                scored = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
                trim_prompt_cache(cache, len(sequence))
                # The k best on the device, then only those k sorted (as torch's topk).
                best = mx.argpartition(-scored, kth=k - 1, axis=-1)[:, :k]
                values = mx.take_along_axis(scored, best, axis=-1)
                order = mx.argsort(-values, axis=-1)
                best = mx.take_along_axis(best, order, axis=-1)
                values = mx.take_along_axis(values, order, axis=-1)
                targets.append(TopK(np.array(best).astype(np.int64), np.array(values)))
        return targets

    # -- training --------------------------------------------------------------------
    def _kl_sum(self, lessons: Sequence[Lesson]):
        """Summed KL from the teacher's renormalised top-k to the student over every answer token.

        The start the prompts share (the system turn) runs once and its keys and
        values are repeated for the batch (gradients flow back through them); the
        rest runs as one right-padded batch under the causal mask, which keeps
        every real token from seeing the padding after it. Only answer positions
        are projected to the vocabulary.
        """
        from mlx_lm.models.cache import make_prompt_cache

        mx = self._mx
        batch = pack(lessons)
        prefix = batch.prefix
        cache = None
        if prefix:
            cache = make_prompt_cache(self.model)
            self.model.model(mx.array([prefix]), cache=cache)
            for layer in cache:
                keys, values = layer.state[0], layer.state[1]
                layer.keys = mx.repeat(keys[..., : len(prefix), :], len(lessons), axis=0)
                layer.values = mx.repeat(values[..., : len(prefix), :], len(lessons), axis=0)
        hidden = self.model.model(mx.array(batch.ids.astype(np.int32)), cache=cache)
        token_ids = mx.array(batch.token_ids)
        teacher = mx.array(batch.teacher_logprobs)
        loss = mlx_ops.topk_kl if self.kernels else mlx_ops.topk_kl_reference
        answer_hidden = hidden[mx.array(batch.rows), mx.array(batch.positions)]
        return loss(answer_hidden, self._output_matrix(), token_ids.astype(mx.int32), teacher)

    def _mean_kl(self, lessons: Sequence[Lesson]):
        return self._kl_sum(lessons) / sum(len(lesson.answer) for lesson in lessons)

    def train_step(self, lessons: Sequence[Lesson], learning_rate: float) -> float:
        import mlx.optimizers as optim

        mx = self._mx
        self._optimizer.learning_rate = learning_rate
        loss, grads = self._loss_and_grad(lessons)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        self._optimizer.update(self.model, grads)
        mx.eval(self.model.trainable_parameters(), self._optimizer.state, loss)
        return loss.item()

    def divergence(self, lessons: Sequence[Lesson]) -> float:
        return self._mean_kl(lessons).item()

    def training_state(self) -> bytes:
        """Tonight's weights and AdamW's moments and step, as one ``.npz`` (no pickle)."""
        from mlx.utils import tree_flatten

        arrays = {f"expert:{n}": np.array(p) for n, p in _trainable(self.model)}
        arrays |= {f"optimizer:{n}": np.array(v) for n, v in tree_flatten(self._optimizer.state)}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def restore_training_state(self, state: bytes) -> None:
        from mlx.utils import tree_unflatten

        mx = self._mx
        try:
            with np.load(io.BytesIO(state), allow_pickle=False) as arrays:
                saved = {name: mx.array(arrays[name]) for name in arrays.files}
        except (OSError, ValueError, KeyError):
            saved = {}
        if not any(name.startswith("expert:") for name in saved):
            raise ModelError("The saved training state is not MLX's.")
        expert = [(n[len("expert:") :], v) for n, v in saved.items() if n.startswith("expert:")]
        shapes = {n: tuple(p.shape) for n, p in _trainable(self.model)}
        if {n: tuple(v.shape) for n, v in expert} != shapes:
            raise ModelError("The saved training state is not this expert's (its layers or rank).")
        self.model.update(tree_unflatten(expert))
        self._optimizer.state = tree_unflatten(
            [(n[len("optimizer:") :], v) for n, v in saved.items() if n.startswith("optimizer:")]
        )
        mx.eval(self.model.parameters(), self._optimizer.state)

    def export_expert(self) -> PeftAdapter:
        """Tonight's expert in PEFT's layout: A is (rank, in), B is (out, rank)."""
        from safetensors.numpy import save

        tensors: dict[str, np.ndarray] = {}
        for path, layer in self._tonight.items():
            tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"] = np.array(layer.lora_a).T.copy()
            tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"] = np.array(layer.lora_b).T.copy()
        return PeftAdapter(dict(self._config), save(tensors))


def _frozen_layers(expert: LearnedExpert) -> tuple[dict, int, float]:
    """A learned expert as {module path: (lora_a, lora_b) in MLX's layout}, its rank and scale."""
    config, pairs = read_peft_adapter(expert.adapter)
    rank = int(config["r"])
    layers = {module: (a.T.copy(), b.T.copy()) for module, (a, b) in pairs.items()}
    return layers, rank, expert.scale * expert.adapter.scaling


def _stack(model, linears: dict, layers: dict, rank: int, scale: float) -> dict:
    """Put one more LoRA around each named linear layer (over the ones already there).

    ``layers`` maps module paths to MLX-layout ``(lora_a, lora_b)``, or to None
    for a fresh expert (mlx-lm's initialisation: A uniform in ±1/sqrt(in), B zero,
    the distribution PEFT uses too). Returns the new LoRA layers by path.
    """
    import mlx.core as mx
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.lora import LoRALinear

    unknown = sorted(set(layers) - set(linears))
    if unknown:
        raise ModelError(f"The expert's adapter has layers this model lacks: {unknown[:3]}")
    current = dict(model.named_modules())
    added = {}
    for path, weights in layers.items():
        out_dims, in_dims = linears[path].weight.shape
        layer = LoRALinear(in_dims, out_dims, r=rank, scale=scale)
        layer.linear = current[path]
        if weights is not None:
            lora_a, lora_b = weights
            if lora_a.shape != (in_dims, rank) or lora_b.shape != (rank, out_dims):
                raise ModelError(f"The expert's layer {path} does not fit this model's shapes.")
            layer.lora_a, layer.lora_b = mx.array(lora_a), mx.array(lora_b)
        added[path] = layer
    model.update_modules(tree_unflatten(list(added.items())))
    return added


def _trainable(model) -> list[tuple[str, object]]:
    from mlx.utils import tree_flatten

    return tree_flatten(model.trainable_parameters())


def _peft_config(new_expert: NewExpert, modules: list[str]) -> dict:
    """The adapter_config.json PEFT writes for tonight's expert (the fields it reads back)."""
    return {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": new_expert.rank,
        "lora_alpha": new_expert.alpha,
        "lora_dropout": 0.0,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
        "base_model_name_or_path": None,
    }


def _rope_in_mlx_terms(model_dir: Path) -> dict:
    """transformers 5 writes the rope base inside ``rope_parameters``; mlx-lm's Llama and
    Qwen2 read only ``rope_theta`` and would silently use their own default base."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    rope = config.get("rope_parameters")
    if "rope_theta" in config or not isinstance(rope, dict) or "rope_theta" not in rope:
        return {}
    if rope.get("rope_type", "default") == "default":
        return {"rope_theta": rope["rope_theta"]}
    return {"rope_theta": rope["rope_theta"], "rope_scaling": rope}
