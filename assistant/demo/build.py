"""Build the demo model once, cache it, and register it like any other model."""

from __future__ import annotations

import shutil
from pathlib import Path

from assistant.demo.training import PRESETS, Progress, train_demo_model
from assistant.errors import ModelError
from assistant.models import ModelRecord, ModelRegistry

DEMO_NAME = "demo"


def cached_demo_dir(cache_root: Path, preset: str) -> Path:
    """Where the build of ``preset`` lives: named by its config, so a change rebuilds."""
    return cache_root / f"{preset}-{PRESETS[preset].key}"


def is_built(cache_root: Path, preset: str) -> bool:
    return (cached_demo_dir(cache_root, preset) / "training.json").is_file()


def build_demo(
    cache_root: Path, preset: str = "full", progress: Progress = lambda *_: None
) -> Path:
    """The Hugging Face directory of the demo model, trained now unless already cached.

    Training writes into a partial directory renamed at the end, so an
    interrupted build leaves nothing that looks finished.
    """
    target = cached_demo_dir(cache_root, preset)
    if is_built(cache_root, preset):
        return target
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    train_demo_model(PRESETS[preset], partial, progress)
    partial.rename(target)
    return target


def register_demo(registry: ModelRegistry, hf_dir: Path, name: str = DEMO_NAME) -> ModelRecord:
    """Register the build under ``name`` and use it; a second call finds it registered."""
    existing = {record.name: record for record in registry.list()}
    record = existing.get(name)
    if record is None:
        record = registry.add(str(hf_dir), name=name)
    elif Path(record.source) != hf_dir:
        raise ModelError(
            f"A different model is already registered as {name!r} ({record.source}).",
            hint="Pick another name with --name, or `assistant model rm` it first.",
        )
    registry.use(name)
    return record
