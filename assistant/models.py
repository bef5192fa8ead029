"""The model registry: which base models are installed and which one chats.

A registered model is a copy of its Hugging Face directory (the source for
training) plus its GGUF conversion (what llama.cpp runs), under
``<data>/models/<name>/``. Rows live in the ``models`` table.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from assistant.convert import QUANT_TYPES, convert_to_gguf, quantize
from assistant.db import Database
from assistant.errors import ModelError
from assistant.hf_weights import read_config

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HF_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelRecord:
    name: str
    source: str
    architecture: str
    hf_dir: Path
    gguf_path: Path
    quant: str | None
    added_at: str


def _record(row: tuple) -> ModelRecord:
    name, source, arch, hf_dir, gguf_path, quant, added = row
    return ModelRecord(name, source, arch, Path(hf_dir), Path(gguf_path), quant, added)


def default_name(source: str) -> str:
    base = source.rstrip("/").split("/")[-1]
    return re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-") or "model"


class ModelRegistry:
    def __init__(self, database: Database, models_dir: Path) -> None:
        self.database = database
        self.models_dir = models_dir

    def list(self) -> list[ModelRecord]:
        rows = self.database.execute(
            "SELECT name, source, architecture, hf_dir, gguf_path, quant, added_at"
            " FROM models ORDER BY added_at, name"
        )
        return [_record(r) for r in rows]

    def get(self, name: str) -> ModelRecord:
        row = self.database.execute(
            "SELECT name, source, architecture, hf_dir, gguf_path, quant, added_at"
            " FROM models WHERE name = ?",
            [name],
        ).fetchone()
        if row is None:
            known = ", ".join(m.name for m in self.list()) or "none"
            raise ModelError(f"No model named {name!r} (registered: {known}).")
        return _record(row)

    def active(self) -> ModelRecord | None:
        name = self.database.get_meta("active_model")
        return self.get(name) if name else None

    def use(self, name: str) -> ModelRecord:
        record = self.get(name)
        self.database.set_meta("active_model", name)
        return record

    def add(
        self,
        source: str,
        name: str | None = None,
        quant: str | None = None,
        progress: Progress = lambda _: None,
    ) -> ModelRecord:
        """Copy or download an HF model, convert it to GGUF, register it."""
        if quant is not None and quant not in QUANT_TYPES:
            raise ModelError(f"Unknown quantization {quant!r}; choose {', '.join(QUANT_TYPES)}.")
        name = name or default_name(source)
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            raise ModelError(f"Invalid model name {name!r}: use lower-case letters, digits, . _ -")
        if any(m.name == name for m in self.list()):
            raise ModelError(
                f"A model named {name!r} is already registered.",
                hint="Pick another with --name, or `assistant model rm` it first.",
            )
        final_dir = self.models_dir / name
        work_dir = self.models_dir / f".{name}.partial"
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        try:
            hf_dir = work_dir / "hf"
            local = Path(source).expanduser()
            if local.exists() or not _REPO_ID.match(source):
                config = read_config(local)
                progress(f"copying {local}")
                shutil.copytree(
                    local, hf_dir, ignore=shutil.ignore_patterns("*.bin", "*.pth", ".*")
                )
            else:
                progress(f"downloading {source} from the Hugging Face Hub")
                self._download(source, hf_dir)
                config = read_config(hf_dir)
            progress("converting to GGUF")
            gguf_path = convert_to_gguf(hf_dir, work_dir / "model.gguf", name)
            if quant:
                progress(f"quantizing to {quant}")
                quantized = quantize(gguf_path, work_dir / f"model-{quant}.gguf", quant)
                gguf_path.unlink()
                gguf_path = quantized
            if final_dir.exists():
                shutil.rmtree(final_dir)  # left by a removal that was interrupted
            work_dir.rename(final_dir)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        record = ModelRecord(
            name,
            source,
            config["architectures"][0],
            final_dir / "hf",
            final_dir / gguf_path.name,
            quant,
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        with self.database.transaction() as conn:
            conn.execute(
                "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    record.name,
                    record.source,
                    record.architecture,
                    str(record.hf_dir),
                    str(record.gguf_path),
                    record.quant,
                    record.added_at,
                ],
            )
            if not self.database.get_meta("active_model"):
                self.database.set_meta("active_model", name)
        return record

    @staticmethod
    def _download(repo_id: str, target: Path) -> None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError

        try:
            snapshot_download(repo_id, local_dir=target, allow_patterns=_HF_FILES)
        except (HfHubHTTPError, OSError) as err:
            raise ModelError(
                f"Could not download {repo_id} from the Hugging Face Hub ({type(err).__name__}).",
                hint="Check the repo id and your network, or pass a local directory.",
            ) from None

    def remove(self, name: str) -> None:
        """Unregister a model and delete its files and its experts."""
        record = self.get(name)
        expert_dirs = [
            Path(row[0]).parent
            for row in self.database.execute(
                "SELECT peft_dir FROM experts WHERE model_name = ?", [name]
            )
        ]
        with self.database.transaction() as conn:
            conn.execute("DELETE FROM experts WHERE model_name = ?", [name])
            conn.execute("DELETE FROM models WHERE name = ?", [name])
            if self.database.get_meta("active_model") == name:
                conn.execute("DELETE FROM meta WHERE key = 'active_model'")
        for directory in [record.hf_dir.parent, *expert_dirs]:
            shutil.rmtree(directory, ignore_errors=True)
