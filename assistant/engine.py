"""llama.cpp inference: one base GGUF plus any number of GGUF LoRA experts.

The high-level ``llama_cpp.Llama`` loads the model and does sampling and
detokenisation; experts go through the low-level adapter API so each can have
its own scale (``llama_set_adapters_lora`` in new llama.cpp, one
``llama_set_adapter_lora`` call per adapter in older ones). Any change of
experts clears the KV cache, since cached keys/values were computed with the
old weights.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from assistant.errors import ModelError
from assistant.hardware import cpu_flags

# Used when a model's GGUF carries no chat template (ChatML, as in Qwen2).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Model output is shown in a terminal: drop control characters (escape sequences included).
_CONTROL = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r") | {127: None}


def _gguf_facts(model_path: Path) -> tuple[bool, int | None]:
    """(all weights F32?, trained context length) read from the GGUF header.

    An all-F32 model gets an F32 KV cache too (llama.cpp defaults to F16, which alone
    costs ~1e-3 relative error in the logits).
    """
    import gguf

    from assistant.models.gguf_header import read_header

    try:
        fields = read_header(model_path).fields
    except ValueError as err:
        raise ModelError(
            f"{model_path.name} is not a readable GGUF file ({err}).",
            hint="It may have been damaged since it was added; add the model again.",
        ) from None
    file_type = fields.get("general.file_type")
    context = fields.get(f"{fields.get('general.architecture')}.context_length")
    return (
        file_type is not None and int(file_type) == gguf.LlamaFileType.ALL_F32,
        int(context) if context else None,
    )


_PARAMS_LOCK = threading.Lock()


@contextmanager
def _model_params_without_extra_buffers(llama_cpp) -> Iterator[None]:
    """Load with llama.cpp's extra CPU buffer types (AMX / weight repacking) turned off.

    On AMX CPUs the llama.cpp bundled with llama-cpp-python 0.3.36 crashes (SIGSEGV)
    evaluating quantized models through those buffers; plain CPU buffers work. The
    high-level ``Llama`` has no switch for it, so its defaults are swapped while it loads.
    """
    module = llama_cpp.llama.llama_cpp
    original = module.llama_model_default_params

    def params():
        value = original()
        value.use_extra_bufts = False
        return value

    with _PARAMS_LOCK:
        module.llama_model_default_params = params
        try:
            yield
        finally:
            module.llama_model_default_params = original


@dataclass(frozen=True)
class ExpertSpec:
    """One expert as chat applies it: its GGUF LoRA at ``path`` (also its identity), or, for a
    sealed expert, the bytes ``read`` decrypts, which llama.cpp loads from a private memory
    file so the plaintext never reaches a disk."""

    path: Path
    scale: float = 1.0
    read: Callable[[], bytes] | None = field(default=None, compare=False)


class ChatEngine:
    def __init__(
        self,
        model_path: Path,
        experts: Sequence[ExpertSpec] = (),
        n_ctx: int = 2048,
        seed: int = 0,
        n_threads: int | None = None,
    ) -> None:
        import llama_cpp

        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelError(
                f"The model file {model_path} is missing.",
                hint="Re-add the model with `assistant model add`.",
            )
        full_precision, trained_context = _gguf_facts(model_path)
        kv_type = llama_cpp.GGML_TYPE_F32 if full_precision else llama_cpp.GGML_TYPE_F16
        n_ctx = min(n_ctx, trained_context or n_ctx)
        guard = (
            _model_params_without_extra_buffers(llama_cpp)
            if "amx_int8" in cpu_flags()
            else nullcontext()
        )
        try:
            with guard:
                self.llm = llama_cpp.Llama(
                    model_path=str(model_path),
                    n_ctx=n_ctx,
                    seed=seed,
                    n_threads=n_threads or max(1, (os.cpu_count() or 2)),
                    type_k=kv_type,
                    type_v=kv_type,
                    verbose=False,
                )
        except ValueError as err:
            raise ModelError(f"llama.cpp could not load {model_path.name}: {err}") from None
        self._lib = llama_cpp
        self._adapters: dict[Path, ctypes.c_void_p] = {}
        self._active: list[ExpertSpec] = []
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = self.llm.token_eos()
        self._formatter = Jinja2ChatFormatter(
            template=self.llm.metadata.get("tokenizer.chat_template") or FALLBACK_CHAT_TEMPLATE,
            eos_token=self.llm._model.token_get_text(eos) if eos >= 0 else "",
            bos_token=self.bos_text,
            add_generation_prompt=True,
        )
        self.set_experts(experts)

    # -- experts -------------------------------------------------------------
    @property
    def experts(self) -> list[ExpertSpec]:
        return list(self._active)

    def set_experts(self, experts: Sequence[ExpertSpec]) -> None:
        """Apply exactly these experts with these scales, loading/freeing adapters as needed."""
        lib, ctx = self._lib, self.llm._ctx.ctx
        experts = [replace(e, path=Path(e.path), scale=float(e.scale)) for e in experts]
        wanted = {e.path for e in experts}
        for spec in experts:
            if spec.path not in self._adapters:
                self._adapters[spec.path] = self._load_adapter(spec)
        if hasattr(lib, "llama_set_adapters_lora"):
            count = len(experts)
            handles = (lib.llama_adapter_lora_p_ctypes * max(count, 1))(
                *[self._adapters[e.path] for e in experts]
            )
            scales = (ctypes.c_float * max(count, 1))(*[e.scale for e in experts])
            status = lib.llama_set_adapters_lora(ctx, handles, count, scales)
        else:
            lib.llama_clear_adapter_lora(ctx)
            status = 0
            for spec in experts:
                status |= lib.llama_set_adapter_lora(ctx, self._adapters[spec.path], spec.scale)
        if status != 0:
            raise ModelError(f"llama.cpp could not apply the experts (status {status}).")
        for path in [p for p in self._adapters if p not in wanted]:
            lib.llama_adapter_lora_free(self._adapters.pop(path))
        self._active = experts
        self.reset_cache()

    def _load_adapter(self, spec: ExpertSpec) -> ctypes.c_void_p:
        from assistant.store.private_file import private_file

        if spec.read is None:
            if not spec.path.is_file():
                raise ModelError(f"The expert file {spec.path} is missing.")
            source = nullcontext(spec.path)
        else:
            source = private_file(spec.read())
        with source as path:
            adapter = self._lib.llama_adapter_lora_init(self.llm._model.model, str(path).encode())
        if not adapter:
            raise ModelError(f"llama.cpp refused the LoRA adapter {spec.path.name}.")
        return adapter

    def reset_cache(self) -> None:
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()

    # -- tokens and logits -----------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    def tokenize(self, text: str, special: bool = True, add_bos: bool = True) -> list[int]:
        """Tokens of ``text``, with BOS first if the model wants one (and ``add_bos``)."""
        add_bos = (
            add_bos
            and self.llm._model.add_bos_token()
            and not (text.startswith(self.bos_text) and self.bos_text)
        )
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    @property
    def end_of_turn(self) -> int:
        """The token that ends a reply (the chat template's end of turn)."""
        return self.llm.token_eos()

    @property
    def bos_text(self) -> str:
        bos = self.llm.token_bos()
        return self.llm._model.token_get_text(bos) if bos >= 0 else ""

    def last_logits(self, tokens: Sequence[int]) -> np.ndarray:
        """Next-token logits after ``tokens`` (evaluated from scratch)."""
        self.reset_cache()
        self.llm.eval(list(tokens))
        return self._current_logits().copy()

    def _current_logits(self) -> np.ndarray:
        """A view of the logits after the last evaluated token (valid until the next eval)."""
        pointer = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),))

    def token_logprobs(self, tokens: Sequence[int], positions: Sequence[int]) -> list[float]:
        """log p(tokens[i] | tokens[:i]) for each i in ``positions`` (ascending, all > 0).

        Feeds the sequence one token at a time after the first position, so it
        needs no all-positions logits buffer; meant for short evaluation texts.
        """
        self.reset_cache()
        logprobs: list[float] = []
        done = 0
        for position in positions:
            self.llm.eval(list(tokens[done:position]))
            done = position
            logits = self._current_logits().astype(np.float64)
            top = logits.max()
            log_norm = top + np.log(np.exp(logits - top).sum())
            logprobs.append(float(logits[tokens[position]] - log_norm))
        return logprobs

    # -- chat -----------------------------------------------------------------
    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """Render messages with the model's own chat template, ready for the reply."""
        return self._formatter(messages=list(messages)).prompt

    def stream(
        self,
        prompt_tokens: Sequence[int],
        max_tokens: int = 256,
        temperature: float = 0.0,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[str]:
        """Yield reply text pieces until end of turn, ``max_tokens`` or ``should_stop()``."""
        chunks = self.llm.create_completion(
            list(prompt_tokens), max_tokens=max_tokens, stream=True, **_sampling(temperature)
        )
        try:
            for chunk in chunks:
                if should_stop():
                    break
                text = chunk["choices"][0]["text"].translate(_CONTROL)
                if text:
                    yield text
        finally:
            chunks.close()

    def complete(
        self,
        prompt_tokens: Sequence[int],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> tuple[list[int], bool]:
        """The reply's tokens (end of turn excluded) and whether the reply ended by itself
        rather than at ``max_tokens``; sampled as ``stream`` samples. A prompt sharing its
        start with the previous one reuses that start's keys and values."""
        result = self.llm.create_completion(
            list(prompt_tokens), max_tokens=max_tokens, seed=seed, **_sampling(temperature)
        )
        choice = result["choices"][0]
        tokens = self.tokenize(choice["text"], special=False, add_bos=False)
        return tokens, choice["finish_reason"] == "stop"

    def close(self) -> None:
        for adapter in self._adapters.values():
            self._lib.llama_adapter_lora_free(adapter)
        self._adapters.clear()
        self.llm.close()


def _sampling(temperature: float) -> dict:
    """How chat samples: greedy at temperature 0, else from the 40 likeliest tokens."""
    return {"temperature": temperature, "top_k": 1 if temperature == 0 else 40}
