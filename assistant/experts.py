"""The registry of learned LoRA experts (rows written by the sleep runner).

Each expert is a directory ``<data>/experts/<id>/`` holding the PEFT adapter
(the training/interchange format) and its GGUF LoRA (what chat loads).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assistant.db import Database


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


class ExpertRegistry:
    def __init__(self, database: Database) -> None:
        self.database = database

    def active(self, model_name: str) -> list[ExpertRecord]:
        """Experts chat applies on top of ``model_name``, oldest first."""
        rows = self.database.execute(
            "SELECT id, model_name, level, scale, status, peft_dir, gguf_path, created_at"
            " FROM experts WHERE model_name = ? AND status = 'active' ORDER BY id",
            [model_name],
        )
        return [
            ExpertRecord(i, m, lvl, s, st, Path(p), Path(g), c)
            for i, m, lvl, s, st, p, g, c in rows
        ]
