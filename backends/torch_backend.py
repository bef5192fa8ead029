"""The torch backend: transformers + PEFT on CUDA, Apple MPS or the CPU.

Every expert is a PEFT LoRA adapter on one base model; all of them are active
at once, each LoRA update multiplied by its expert's scale (the same sum
llama.cpp computes at chat time). The teacher view sets the new expert's
scale to zero rather than swapping adapters, so both views share one model.

With the fused experts (``use_kernels``), each LoRA layer adds all its experts in one pass
(``assistant.kernels.lora_experts``) instead of PEFT's loop over adapters; with the chunked
loss, the loss is ``topk_kl`` instead of the plain ``topk_kl_reference``.
"""

from __future__ import annotations

import io
import json
import warnings
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
from assistant.experts.peft import PeftAdapter
from assistant.kernels.lora_experts import lora_experts
from assistant.kernels.topk_kl import topk_kl, topk_kl_reference

NEW = "tonight"  # adapter name of the expert being trained


def pick_device(requested: str = "auto") -> str:
    """The torch device for ``auto|cpu|cuda|mps``; a clear error if the one asked for is absent."""
    import torch

    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
    }
    if requested == "auto":
        return next(name for name in ("cuda", "mps", "cpu") if available[name])
    if requested not in available:
        raise ModelError(f"Unknown device {requested!r}.", hint="Use auto, cpu, cuda or mps.")
    if not available[requested]:
        raise ModelError(
            f"torch sees no {requested} device here.", hint="Use --device auto or cpu."
        )
    return requested


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        model_dir: Path,
        learned: Sequence[LearnedExpert] = (),
        new_expert: NewExpert | None = None,
        device: str = "auto",
        kernels: str = "auto",
    ) -> None:
        import torch
        from peft import LoraConfig
        from peft.tuners.lora import LoraLayer
        from transformers import AutoModelForCausalLM

        new_expert = new_expert or NewExpert()
        self.device = pick_device(device)
        self._torch = torch
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        new_config = LoraConfig(
            r=new_expert.rank,
            lora_alpha=new_expert.alpha,
            target_modules=list(new_expert.target_modules),
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        )
        scales = {f"learned{i}": e.scale for i, e in enumerate(learned)}
        with warnings.catch_warnings():
            # peft calls a transformers API that warns of its own deprecation; nothing to act on.
            warnings.simplefilter("ignore", FutureWarning)
            model = base
            for name, expert in zip(scales, learned, strict=True):
                model = _with_adapter(model, name, expert.adapter)
            torch.manual_seed(new_expert.seed)
            model = _with_adapter(model, NEW, new_config)
        model.base_model.set_adapter([*scales, NEW])
        lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
        for layer in lora_layers:
            for name, scale in scales.items():
                if name in layer.scaling:
                    layer.scaling[name] *= scale
        # (layer, its scaling of the new expert): the teacher view zeroes and restores these.
        self._new_scalings = [(m, m.scaling[NEW]) for m in lora_layers if NEW in m.scaling]
        for param_name, param in model.named_parameters():
            param.requires_grad = f".{NEW}." in param_name
        self.model = model.to(self.device).eval()
        self.fused_experts, self.chunked_loss = use_kernels(kernels, self.device)
        if self.fused_experts:
            for layer in lora_layers:
                _fuse_experts(layer)
        self._new_params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self._optimizer = torch.optim.AdamW(
            list(self._new_params.values()), lr=1e-4, weight_decay=0.0
        )

    # -- the two views -----------------------------------------------------------
    @contextmanager
    def _view(self, student: bool) -> Iterator[None]:
        """Teacher: the new expert's scale is zero. Student: as trained."""
        if not student:
            for layer, _ in self._new_scalings:
                layer.scaling[NEW] = 0.0
        try:
            yield
        finally:
            for layer, scaling in self._new_scalings:
                layer.scaling[NEW] = scaling

    def _cache(self, result) -> dict:
        """A forward's key-value cache, as the keyword argument that passes it back in
        (``cache`` since transformers 5; ``past_key_values`` before)."""
        if hasattr(result, "cache"):
            return {"cache": result.cache}
        return {"past_key_values": result.past_key_values}

    def _ids(self, tokens: Sequence[int]):
        return self._torch.tensor([list(tokens)], dtype=self._torch.long, device=self.device)

    # -- inference -----------------------------------------------------------------
    def last_logits(self, tokens: Sequence[int], *, student: bool = True) -> np.ndarray:
        with self._torch.no_grad(), self._view(student):
            logits = self.model(input_ids=self._ids(tokens)).logits[0, -1]
        return logits.float().cpu().numpy()

    def teacher_topk(
        self, prefix: Sequence[int], continuations: Sequence[Continuation], k: int
    ) -> list[TopK]:
        """Runs the prefix once, then each continuation on its cached keys and values (cropped).

        Only the positions that predict answer tokens are projected to the vocabulary:
        the prefix's and prompts' logits would cost a vocabulary-wide matmul per token.
        """
        torch = self._torch
        causal_lm = self.model.get_base_model()
        targets: list[TopK] = []
        with torch.no_grad(), self._view(student=False):
            first = causal_lm.model(input_ids=self._ids(prefix), use_cache=True)
            cache, after_prefix = self._cache(first), first.last_hidden_state[0, -1:]
            for probe in continuations:
                hidden = causal_lm.model(
                    input_ids=self._ids([*probe.prompt, *probe.answer]), use_cache=True, **cache
                ).last_hidden_state[0]
                # Back to the prefix.
                next(iter(cache.values())).crop(-(len(probe.prompt) + len(probe.answer)))
                # Position i predicts token i+1; the prefix's last position predicts the first.
                answering = torch.cat([after_prefix, hidden])[len(probe.prompt) :]
                logits = causal_lm.lm_head(answering[: len(probe.answer)]).float()
                best = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
                targets.append(TopK(best.indices.cpu().numpy(), best.values.cpu().numpy()))
        return targets

    # -- training --------------------------------------------------------------------
    def _kl_sum(self, lessons: Sequence[Lesson]):
        """Summed KL from the teacher's renormalised top-k to the student over every answer token.

        The start the prompts share (the system turn) runs once and its keys and
        values are repeated for the batch (gradients flow back through them); the
        rest runs as one right-padded batch, and only answer positions are projected
        to the vocabulary (the prompts' logits are never needed).
        """
        torch = self._torch
        causal_lm = self.model.get_base_model()
        batch = pack(lessons)
        prefix, width = batch.prefix, batch.ids.shape[1]
        shared: dict = {}
        if prefix:
            shared = self._cache(causal_lm.model(input_ids=self._ids(prefix), use_cache=True))
            next(iter(shared.values())).batch_repeat_interleave(len(lessons))
        mask = None  # without padding, no mask: attention then takes its plain causal path
        if batch.padded:
            mask = torch.zeros((len(lessons), len(prefix) + width), dtype=torch.long)
            mask[:, : len(prefix)] = 1
            for row, length in enumerate(batch.lengths):
                mask[row, len(prefix) : len(prefix) + length] = 1
            mask = mask.to(self.device)
        hidden = causal_lm.model(
            input_ids=torch.as_tensor(batch.ids, device=self.device),
            attention_mask=mask,
            position_ids=torch.arange(len(prefix), len(prefix) + width, device=self.device)
            .unsqueeze(0)
            .expand(len(lessons), -1),
            use_cache=bool(prefix),
            **shared,
        ).last_hidden_state
        token_ids = torch.as_tensor(batch.token_ids, device=self.device)
        teacher = torch.as_tensor(batch.teacher_logprobs, device=self.device)
        loss = topk_kl if self.chunked_loss else topk_kl_reference
        answers = hidden[batch.rows, batch.positions]
        return loss(answers, causal_lm.lm_head.weight, token_ids, teacher)

    def train_step(self, lessons: Sequence[Lesson], learning_rate: float) -> float:
        torch = self._torch
        for group in self._optimizer.param_groups:
            group["lr"] = learning_rate
        self.model.train()
        total_tokens = sum(len(lesson.answer) for lesson in lessons)
        loss = self._kl_sum(lessons) / total_tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._new_params.values(), 1.0)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        return loss.item()

    def divergence(self, lessons: Sequence[Lesson]) -> float:
        with self._torch.no_grad():
            total = self._kl_sum(lessons).item()
        return total / sum(len(lesson.answer) for lesson in lessons)

    def training_state(self) -> bytes:
        buffer = io.BytesIO()
        self._torch.save(
            {
                "expert": {n: p.detach().cpu() for n, p in self._new_params.items()},
                "optimizer": self._optimizer.state_dict(),
            },
            buffer,
        )
        return buffer.getvalue()

    def restore_training_state(self, state: bytes) -> None:
        # weights_only: plain tensors and containers, never arbitrary objects.
        saved = self._torch.load(io.BytesIO(state), map_location=self.device, weights_only=True)
        with self._torch.no_grad():
            for name, param in self._new_params.items():
                param.copy_(saved["expert"][name])
        self._optimizer.load_state_dict(saved["optimizer"])

    def export_expert(self) -> PeftAdapter:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save

        tensors = get_peft_model_state_dict(self.model, adapter_name=NEW)
        config = self.model.peft_config[NEW].to_dict()
        config.update(inference_mode=True, base_model_name_or_path=None)
        serializable = json.loads(json.dumps(config, default=_json_value))
        weights = save({k: v.detach().to("cpu", self._torch.float32) for k, v in tensors.items()})
        return PeftAdapter(serializable, weights)


def use_kernels(setting: str, device: str) -> tuple[bool, bool]:
    """(fused experts, chunked loss) for ``sleep_kernels``.

    ``auto`` is on with CUDA (Triton; not yet timed on a GPU) and off on the CPU, where a
    starter-shaped night measured 1.12x slower with the fused experts and 1.20x with both
    (``bench/sleep.py --kernels on``, no learned experts); ``on`` still takes them there, the
    chunked loss for its memory."""
    on = setting == "on" or (setting == "auto" and device == "cuda")
    return on, on


def _fuse_experts(layer) -> None:
    """Make a PEFT LoRA layer add all its active experts in one fused pass.

    The learned experts are stacked once (they never change); tonight's expert joins the
    stack at each call, so its gradient flows to its own parameters. Scales are read at each
    call, so the teacher view (tonight's scale zero) still works.
    """
    import torch
    import torch.nn.functional as F

    names = [name for name in layer.active_adapters if name in layer.lora_A]
    if any(layer.use_dora[name] or layer.lora_bias[name] for name in names):
        return  # DoRA and LoRA biases add terms of PEFT's own: its forward keeps the layer
    learned = [name for name in names if name != NEW]
    rank = max(layer.r[name] for name in names)

    def a_of(name):  # PEFT's A is (r, d_in); the stack wants (d_in, r), zero-padded to rank
        return F.pad(layer.lora_A[name].weight.t(), (0, rank - layer.r[name]))

    def b_of(name):  # PEFT's B is (d_out, r); the stack wants (r, d_out)
        return F.pad(layer.lora_B[name].weight.t(), (0, 0, 0, rank - layer.r[name]))

    def stack(of):  # the learned experts' (E, ...) stack, (0, ...) when there are none
        if not learned:
            return of(names[0]).detach()[None][:0]
        return torch.stack([of(name).detach() for name in learned])

    frozen = [stack(a_of), stack(b_of)]
    trainable = len(learned) if NEW in names else None
    base_layer = layer.base_layer
    gates_by_scales = {}  # on the device once per set of scales: no host copy at each call

    def forward(x, *args, **kwargs):
        a, b = frozen
        if trainable is not None:
            a = torch.cat([a, a_of(NEW)[None]])
            b = torch.cat([b, b_of(NEW)[None]])
        scales = tuple(layer.scaling[name] for name in [*learned, NEW][: len(a)])
        if scales not in gates_by_scales:
            gates_by_scales[scales] = torch.tensor(scales, dtype=x.dtype, device=x.device)
        gates = gates_by_scales[scales]
        update = lora_experts(x.reshape(-1, x.shape[-1]), a, b, gates, trainable)
        return base_layer(x, *args, **kwargs) + update.reshape(*x.shape[:-1], -1)

    layer.forward = forward


def _json_value(value: object) -> object:
    """What PEFT's own config writer does with the values JSON lacks: sets become lists."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot write {type(value).__name__} in an adapter config")


def _with_adapter(model, name: str, adapter):
    """``model`` with one more LoRA adapter: a learned one (a ``PeftAdapter``, weights loaded
    from memory) or a new one (a ``LoraConfig``, freshly initialised)."""
    from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict

    config = (
        adapter if isinstance(adapter, LoraConfig) else LoraConfig.from_peft_type(**adapter.config)
    )
    if isinstance(model, PeftModel):
        model.add_adapter(name, config)
    else:
        model = get_peft_model(model, config, adapter_name=name)
    if not isinstance(adapter, LoraConfig):
        from safetensors.torch import load

        result = set_peft_model_state_dict(model, load(adapter.weights), adapter_name=name)
        if result.unexpected_keys:
            raise ModelError(
                f"The expert's adapter has tensors this model lacks: {result.unexpected_keys[:3]}"
            )
    return model
