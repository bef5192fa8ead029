"""``assistant adapters``: what each expert holds, export, reset and import.

Reset and import change the set of experts, so they hold the sleep lock: they
never run during a sleep, and a sleep never starts during them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assistant.adapters import lora
from assistant.adapters.formats import FORMATS, Base
from assistant.errors import AssistantError, ModelError
from assistant.experts import vault
from assistant.experts.lora_gguf import gguf_lora, read_peft_adapter
from assistant.experts.peft import PeftAdapter
from assistant.experts.registry import ACTIVE, ExpertRecord
from assistant.models.hf_weights import base_fingerprint, read_config, weight_shapes
from assistant.models.registry import ModelRecord
from assistant.runtime import Runtime
from assistant.store import db
from assistant.store.db import fsync_directory

EXPORT_INFO = "export.json"  # next to every export: which base and experts it came from
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# PEFT options an expert cannot carry: its update would not be B @ A on every layer.
_UNSUPPORTED = ("layers_to_transform", "use_dora")  # patterns: read_peft_adapter refuses


# -- describing ---------------------------------------------------------------------
def summary(runtime: Runtime, expert: ExpertRecord) -> str:
    """A line about what the expert holds, from its night's sealed report (never raw logs)."""
    if expert.sleep_id is None:
        return f"Imported from {expert.origin.removeprefix('import:')}."
    from assistant.sleep.state import SleepLog

    log = SleepLog(runtime.database, runtime.memory)
    report = log.report(log.get(expert.sleep_id))
    if report is None:
        return f"Learned in night {expert.sleep_id}."
    learned = "; ".join(report.learned[:3])
    return f"Learned from {report.turns} messages" + (f", e.g. {learned}" if learned else ".")


def describe_all(runtime: Runtime, model_name: str) -> list[dict]:
    """``describe`` for every expert of the model, read once the memory is unlocked (the first
    unlock after an upgrade may seal or drop experts)."""
    runtime.memory  # noqa: B018
    return [describe(runtime, e) for e in runtime.experts.list(model_name)]


def describe(runtime: Runtime, expert: ExpertRecord) -> dict:
    return {
        "id": expert.id,
        "night": expert.sleep_id,
        "level": expert.level,
        "rank": expert.rank,
        "target_modules": _target_modules(runtime, expert),
        "size_bytes": expert.size_bytes,
        "scale": expert.scale,
        "status": expert.status,
        "origin": expert.origin,
        "created_at": expert.created_at,
        "summary": summary(runtime, expert),
    }


def _target_modules(runtime: Runtime, expert: ExpertRecord) -> list[str]:
    if expert.status != ACTIVE:
        return []  # its files may be gone already
    modules = runtime.experts.open(runtime.memory, expert).config().get("target_modules") or []
    return sorted([modules] if isinstance(modules, str) else modules)


# -- export ---------------------------------------------------------------------------
@dataclass
class Exported:
    path: Path
    experts: list[int]
    rank: int
    errors: dict[str, float] = field(default_factory=dict)  # per layer, when compressed


def linear_shapes(hf_dir: Path) -> dict[str, tuple[int, int]]:
    """{module: (out, in)} for every 2-D weight of the base model."""
    return {
        name.removesuffix(".weight"): shape
        for name, shape in weight_shapes(hf_dir).items()
        if name.endswith(".weight") and len(shape) == 2
    }


def _base(model: ModelRecord, hf_dir: Path) -> Base:
    source = model.source if _HUB_ID.match(model.source) else str(hf_dir)
    return Base(read_config(hf_dir), source, model.gguf_path)


def export(
    runtime: Runtime,
    out_dir: Path,
    fmt: str = "peft",
    *,
    each: bool = False,
    rank: int | None = None,
) -> list[Exported]:
    """Write the active experts, merged into one adapter or one each, to ``out_dir``."""
    if fmt not in FORMATS:
        raise AssistantError(f"Unknown format {fmt!r}.", hint=f"Use one of {', '.join(FORMATS)}.")
    if rank is not None and rank < 1:
        raise AssistantError("--rank must be at least 1.")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise AssistantError(
            f"{out_dir} already exists and is not empty; nothing was written.",
            hint="Choose a new folder.",
        )
    model = runtime.require_model()
    runtime.memory  # noqa: B018 - unlocked before the experts are read (see describe_all)
    experts = runtime.experts.active(model.name)
    if not experts:
        raise AssistantError(
            f"Nothing learned yet on {model.name}: there are no experts to export.",
            hint="Experts come from `assistant sleep --now` or `assistant adapters import`.",
        )
    hf_dir = runtime.training_dir(model)  # made once for a model added as a GGUF file
    base, shapes = _base(model, hf_dir), linear_shapes(hf_dir)
    fingerprint = base_fingerprint(hf_dir)
    groups = [[e] for e in experts] if each else [experts]
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, mode=0o700)
    results = []
    for group in groups:
        target = partial / f"expert-{group[0].id}" if each else partial
        target.mkdir(exist_ok=True, mode=0o700)
        update = lora.merge(
            [
                lora.read_update(runtime.experts.open(runtime.memory, e).adapter(), e.scale)
                for e in group
            ],
            shapes,
        )
        if rank is not None and rank < update.rank:
            update = lora.compress(update, rank)
        FORMATS[fmt](update, target, base)
        ids = [e.id for e in group]
        info = {
            "format": fmt,
            "base_model": model.name,
            "base_source": base.name_or_path,
            "base_fingerprint": fingerprint,
            "experts": ids,
            "rank": update.rank,
            "relative_error_per_layer": update.errors,
        }
        (target / EXPORT_INFO).write_text(json.dumps(info, indent=2))
        results.append(
            Exported(out_dir / target.relative_to(partial), ids, update.rank, update.errors)
        )
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    os.replace(partial, out_dir)
    return results


# -- reset ------------------------------------------------------------------------------
def reset(runtime: Runtime, ids: Sequence[int] = (), *, everything: bool = False) -> list[int]:
    """Remove these experts (or all of the active model's); returns the ids removed.

    A reset killed half-way is finished by the next reset (or sleep).
    """
    model = runtime.require_model()
    with runtime.exclusive("an adapter reset"):
        if everything:
            experts = runtime.experts.list(model.name)
        else:
            experts = [runtime.experts.get(model.name, i) for i in dict.fromkeys(ids)]
        return runtime.experts.remove(experts)


# -- import ------------------------------------------------------------------------------
def import_adapter(
    runtime: Runtime, source: Path, scale: float = 1.0, *, trust_base: bool = False
) -> ExpertRecord:
    """Register a PEFT LoRA adapter trained elsewhere on the active model as an expert."""
    source = Path(source).expanduser()
    model = runtime.require_model()
    adapter = PeftAdapter.read(source)
    config, modules = read_peft_adapter(adapter)
    unsupported = [key for key in _UNSUPPORTED if config.get(key)]
    if config.get("modules_to_save"):
        unsupported.append("modules_to_save")
    if config.get("bias", "none") != "none":
        unsupported.append("bias")
    if unsupported:
        raise ModelError(
            f"This adapter uses {', '.join(unsupported)}, which experts cannot carry;"
            " nothing was imported."
        )
    hf_dir = runtime.training_dir(model)  # made once for a model added as a GGUF file
    _check_base(source, config, model, hf_dir, trust_base)
    _check_shapes(modules, config["r"], linear_shapes(hf_dir), model.name)
    experts_dir = runtime.paths.experts_dir
    experts_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"import-{secrets.token_hex(4)}"
    gguf = gguf_lora(adapter, read_config(hf_dir))
    store = runtime.memory
    with runtime.exclusive("an adapter import"):
        staging = experts_dir / f".staging-{name}"
        key = vault.new_key()
        hashes = vault.seal_expert(staging, key, adapter, gguf)
        os.replace(staging, experts_dir / name)  # if killed now, the next sleep removes the orphan
        fsync_directory(experts_dir)
        with runtime.database.transaction():
            expert_id = runtime.experts.add(
                store,
                model.name,
                experts_dir / name,
                key,
                hashes,
                config["r"],
                scale=scale,
                origin=f"import:{source.resolve().name}",
                created_at=db.now(),
            )
    return runtime.experts.get(model.name, expert_id)


def _check_base(
    source: Path, config: dict, model: ModelRecord, hf_dir: Path, trust_base: bool
) -> None:
    """Refuse an adapter made for another base: by fingerprint where one can be computed."""
    ours = base_fingerprint(hf_dir)
    info_path = source / EXPORT_INFO
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("base_fingerprint") != ours:
            raise ModelError(
                f"This adapter was exported from another base model ({info.get('base_model')});"
                f" the active model is {model.name}. Nothing was imported.",
                hint="Switch to that model with `assistant model use` first.",
            )
        return
    named = str(config.get("base_model_name_or_path") or "")
    if named and Path(named).expanduser().is_dir():
        if base_fingerprint(Path(named).expanduser()) != ours:
            raise ModelError(
                f"This adapter was trained on {named}, whose weights differ from the active"
                f" model {model.name}. Nothing was imported.",
                hint="Switch to that model with `assistant model use` first.",
            )
        return
    if named and named != model.source and not trust_base:
        raise ModelError(
            f"This adapter was trained on {named!r}, but the active model is {model.name}"
            f" (from {model.source}). Nothing was imported.",
            hint="If it really was trained on this model, pass --trust-base.",
        )


def _check_shapes(
    modules: dict, rank: int, shapes: dict[str, tuple[int, int]], model_name: str
) -> None:
    for module, pair in sorted(modules.items()):
        if module not in shapes:
            raise ModelError(
                f"The adapter adapts {module}, which {model_name} does not have: it was made"
                " for another architecture. Nothing was imported."
            )
        out_dim, in_dim = shapes[module]
        lora_a, lora_b = pair
        if lora_a.shape != (rank, in_dim) or lora_b.shape != (out_dim, rank):
            raise ModelError(
                f"The adapter's {module} has shapes A {lora_a.shape}, B {lora_b.shape}, but"
                f" {model_name} needs A ({rank}, {in_dim}), B ({out_dim}, {rank}):"
                " it was made for another model. Nothing was imported."
            )
