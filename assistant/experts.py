"""The registry of learned LoRA experts (rows written by the sleep runner or an import).

Each expert is a directory ``<data>/experts/<name>/`` holding the PEFT adapter
(the training/interchange format) and its GGUF LoRA (what chat loads).

Removal is crash-safe in three steps: the rows are marked ``removing`` (chat
stops applying them at once), their directories are deleted, then the rows and
their probe sets go in one transaction. A removal killed half-way is finished
by the next ``finish_removals``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import AssistantError
from assistant.faults import crash_point
from assistant.store.db import Database

ACTIVE, REMOVING = "active", "removing"
# Inside an expert's directory: the PEFT adapter folder and the GGUF LoRA chat loads.
PEFT_DIR, GGUF_FILE = "peft", "expert.gguf"
_COLUMNS = (
    "id, model_name, level, scale, status, peft_dir, gguf_path, created_at, sleep_id, rank, origin"
)


@dataclass(frozen=True)
class ExpertRecord:
    id: int
    model_name: str
    level: int
    scale: float
    status: str
    peft_dir: Path
    gguf_path: Path
    created_at: str
    sleep_id: int | None
    rank: int | None
    origin: str

    @property
    def directory(self) -> Path:
        return self.peft_dir.parent

    @property
    def target_modules(self) -> list[str]:
        config = json.loads((self.peft_dir / "adapter_config.json").read_text())
        modules = config.get("target_modules") or []
        return sorted([modules] if isinstance(modules, str) else modules)

    @property
    def size_bytes(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(f.stat().st_size for f in self.directory.rglob("*") if f.is_file())


def _record(row: tuple) -> ExpertRecord:
    i, model, level, scale, status, peft, gguf, created, sleep_id, rank, origin = row
    return ExpertRecord(
        i, model, level, scale, status, Path(peft), Path(gguf), created, sleep_id, rank, origin
    )


class ExpertRegistry:
    def __init__(self, database: Database) -> None:
        self.database = database

    def _select(self, where: str, params: list) -> list[ExpertRecord]:
        rows = self.database.execute(
            f"SELECT {_COLUMNS} FROM experts WHERE {where} ORDER BY id", params
        )
        return [_record(row) for row in rows]

    def active(self, model_name: str) -> list[ExpertRecord]:
        """Experts chat applies on top of ``model_name``, oldest first."""
        return self._select("model_name = ? AND status = ?", [model_name, ACTIVE])

    def list(self, model_name: str) -> list[ExpertRecord]:
        """Every expert of ``model_name``, including any whose removal was interrupted."""
        return self._select("model_name = ?", [model_name])

    def get(self, model_name: str, expert_id: int) -> ExpertRecord:
        found = self._select("model_name = ? AND id = ?", [model_name, expert_id])
        if not found:
            known = ", ".join(str(e.id) for e in self.list(model_name)) or "none"
            raise AssistantError(
                f"No expert {expert_id} on {model_name} (experts: {known}).",
                hint="`assistant adapters list` shows them.",
            )
        return found[0]

    def add(
        self,
        model_name: str,
        directory: Path,
        rank: int,
        *,
        scale: float = 1.0,
        sleep_id: int | None = None,
        origin: str = "sleep",
        created_at: str,
    ) -> int:
        """Register the expert whose files are complete in ``directory``; returns its id.

        Call inside the caller's transaction when other rows must commit with it.
        """
        cursor = self.database.execute(
            "INSERT INTO experts (model_name, level, scale, status, peft_dir, gguf_path,"
            " created_at, sleep_id, rank, origin) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                model_name,
                scale,
                ACTIVE,
                str(directory / PEFT_DIR),
                str(directory / GGUF_FILE),
                created_at,
                sleep_id,
                rank,
                origin,
            ],
        )
        return int(cursor.lastrowid)

    def remove(self, experts: Iterable[ExpertRecord]) -> list[int]:
        """Remove these experts' rows, files and probe sets; returns the ids removed."""
        ids = [e.id for e in experts]
        if ids:
            with self.database.transaction():
                self.database.execute(
                    f"UPDATE experts SET status = ? WHERE id IN ({','.join('?' * len(ids))})",
                    [REMOVING, *ids],
                )
            crash_point("reset-marked")
        return self.finish_removals()

    def finish_removals(self) -> list[int]:
        """Delete the files, then the rows, of every expert marked ``removing``."""
        pending = self._select("status = ?", [REMOVING])
        for expert in pending:
            shutil.rmtree(expert.directory, ignore_errors=True)
            crash_point("reset-files")
        ids = [e.id for e in pending]
        if ids:
            marks = ",".join("?" * len(ids))
            with self.database.transaction():
                self.database.execute(
                    f"DELETE FROM expert_probes WHERE expert_id IN ({marks})", ids
                )
                self.database.execute(f"DELETE FROM experts WHERE id IN ({marks})", ids)
        return ids
