"""The registry of learned LoRA experts (rows written by the sleep runner or an import).

Each expert is a directory ``<data>/experts/<name>/`` of sealed files (see
``assistant.experts.vault``): the PEFT adapter (the training/interchange format)
and its GGUF LoRA (what chat loads). Its row holds the expert's key, wrapped by
the master key with associated data binding the row's id, model and file
hashes, so an edited row or a swapped file is refused.

Removal is crash-safe in three steps: the rows are marked ``removing`` (chat
stops applying them at once), their directories are deleted, then the rows
(with their wrapped keys) and their probe sets go in one transaction. A removal
killed half-way is finished by the next ``finish_removals``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assistant.errors import AssistantError, TamperedError
from assistant.experts import vault
from assistant.experts.peft import PeftAdapter
from assistant.faults import crash_point
from assistant.store.db import Database, fsync_directory, retry_while_busy
from assistant.store.memory import MemoryStore
from assistant.store.sealed import expert_key_label, expert_probes_label

if TYPE_CHECKING:
    from assistant.engine import ExpertSpec

ACTIVE, REMOVING = "active", "removing"
_COLUMNS = (
    "id, model_name, level, scale, status, directory, created_at, sleep_id, rank, origin,"
    " hashes, wrapped_key"
)


@dataclass(frozen=True)
class ExpertRecord:
    id: int
    model_name: str
    level: int
    scale: float
    status: str
    directory: Path
    created_at: str
    sleep_id: int | None
    rank: int | None
    origin: str
    hashes: dict[str, str]
    wrapped_key: bytes | None  # None: a plaintext expert from before experts were sealed

    @property
    def size_bytes(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(f.stat().st_size for f in self.directory.rglob("*") if f.is_file())


def key_label(expert_id: int, model_name: str, hashes: dict[str, str]) -> str:
    row = {"id": expert_id, "model_name": model_name, "hashes": _canonical(hashes)}
    return expert_key_label(row)


def _canonical(hashes: dict[str, str]) -> str:
    return json.dumps(hashes, sort_keys=True)


def _record(row: tuple) -> ExpertRecord:
    i, model, level, scale, status, directory, created, sleep_id, rank, origin, hashes, key = row
    return ExpertRecord(
        i,
        model,
        level,
        scale,
        status,
        Path(directory),
        created,
        sleep_id,
        rank,
        origin,
        json.loads(hashes or "{}"),
        None if key is None else bytes(key),
    )


LEGACY_PEFT_DIR = "peft"  # where a plaintext expert kept its PEFT folder


def remove_plaintext(directory: Path) -> None:
    """Delete what an expert from before sealing kept in plaintext (unlinked: the disk's
    blocks are not overwritten, which on SSDs nothing can promise)."""
    legacy = [directory / LEGACY_PEFT_DIR, directory / vault.GGUF_FILE]
    if not any(path.exists() for path in legacy):
        return
    shutil.rmtree(legacy[0], ignore_errors=True)
    legacy[1].unlink(missing_ok=True)
    fsync_directory(directory)


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
        memory: MemoryStore,
        model_name: str,
        directory: Path,
        key: bytes,
        hashes: dict[str, str],
        rank: int,
        *,
        scale: float = 1.0,
        sleep_id: int | None = None,
        origin: str = "sleep",
        created_at: str,
        probes: bytes | None = None,
    ) -> int:
        """Register the expert sealed under ``key`` in ``directory``, with the ``probes`` it
        was verified on (sealed; an imported expert has none); returns its id.

        Call inside the caller's transaction when other rows must commit with it.
        """
        cursor = self.database.execute(
            "INSERT INTO experts (model_name, level, scale, status, directory, created_at,"
            " sleep_id, rank, origin, hashes) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                model_name,
                scale,
                ACTIVE,
                str(directory),
                created_at,
                sleep_id,
                rank,
                origin,
                _canonical(hashes),
            ],
        )
        expert_id = int(cursor.lastrowid)
        self._set_key(memory, expert_id, model_name, hashes, key)
        if probes is not None:
            self.database.execute(
                "INSERT INTO expert_probes (expert_id, sealed) VALUES (?, ?)",
                [expert_id, memory.seal(expert_probes_label(expert_id), probes)],
            )
        return expert_id

    def probes(self, memory: MemoryStore, expert: ExpertRecord) -> bytes | None:
        """The probes the expert was verified on, as ``add`` was given them (None: none)."""
        row = self.database.execute(
            "SELECT sealed FROM expert_probes WHERE expert_id = ?", [expert.id]
        ).fetchone()
        return None if row is None else memory.unseal(expert_probes_label(expert.id), row[0])

    def _set_key(
        self, memory: MemoryStore, expert_id: int, model_name: str, hashes: dict, key: bytes
    ) -> None:
        self.database.execute(
            "UPDATE experts SET hashes = ?, wrapped_key = ? WHERE id = ?",
            [
                _canonical(hashes),
                memory.seal(key_label(expert_id, model_name, hashes), key),
                expert_id,
            ],
        )

    def open(self, memory: MemoryStore, expert: ExpertRecord) -> vault.SealedExpert:
        """The expert's files with their key; fails if the row or the files were changed."""
        if expert.wrapped_key is None:  # read before this unlock sealed it: read it again
            expert = (self._select("id = ?", [expert.id]) or [expert])[0]
        if expert.wrapped_key is None:
            raise TamperedError(
                f"Expert {expert.id} has no key in the registry: it was changed outside the"
                " assistant, so it is not used.",
                hint="Remove it with `assistant adapters reset` or restore a backup.",
            )
        key = memory.unseal(
            key_label(expert.id, expert.model_name, expert.hashes), expert.wrapped_key
        )
        return vault.SealedExpert(expert.directory, key, expert.hashes, f"expert {expert.id}")

    def chat_spec(self, memory: MemoryStore, expert: ExpertRecord) -> ExpertSpec:
        """The expert as chat applies it: its GGUF LoRA, decrypted when llama.cpp loads it."""
        from assistant.engine import ExpertSpec

        sealed = self.open(memory, expert)
        return ExpertSpec(sealed.path(vault.GGUF_FILE), expert.scale, read=sealed.gguf)

    def seal_plaintext(self, memory: MemoryStore) -> list[int]:
        """Seal every expert still stored in plaintext (from before experts were sealed).

        Crash-safe: the sealed files are written and made durable, the row gets its key
        and hashes in one statement, and only then are the plaintext files removed. A run
        killed before the row update starts over; one killed after it only has leftover
        plaintext to remove, which the next run does.
        """
        sealed = []
        for expert in self._select("wrapped_key IS NULL AND status = ?", [ACTIVE]):
            legacy = expert.directory / LEGACY_PEFT_DIR
            if not (legacy.is_dir() and (expert.directory / vault.GGUF_FILE).is_file()):
                self.remove([expert])  # its files are gone already: nothing left to seal
                continue
            adapter = PeftAdapter.read(legacy)
            gguf = (expert.directory / vault.GGUF_FILE).read_bytes()
            key = vault.new_key()
            hashes = vault.seal_expert(expert.directory, key, adapter, gguf)
            crash_point("expert-sealed")
            with self.database.transaction():
                self._set_key(memory, expert.id, expert.model_name, hashes, key)
            sealed.append(expert.id)
        for expert in self._select("wrapped_key IS NOT NULL", []):
            remove_plaintext(expert.directory)
        return sealed

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
            retry_while_busy(self.database.purge_log)  # no copy of the keys in the log
        return ids
