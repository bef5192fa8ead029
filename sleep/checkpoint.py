"""A paused night's work on disk, so the next run picks up where it stopped.

What a night has built (probes: questions about the day's memories and their
answers; lessons: their token ids; the expert's weights and optimizer state)
is as private as the memories. Each checkpoint is encrypted with its own
random key; that key is kept sealed in the night's ``sleeps`` row, so clearing
the row's ``checkpoint`` crypto-shreds the file even if its blocks survive the
unlink, as deleting an epoch's key does for its turns.

A save writes a new file (temporary name, fsync, rename), then points the row
at it, then deletes the previous one: killed at any moment, the row names a
complete file, and files no row names are removed by the next run.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from assistant.backends.protocol import Lesson, TopK
from assistant.errors import TamperedError
from assistant.sleep.probes import Probe
from assistant.store.db import Database
from assistant.store.memory import MemoryStore
from assistant.store.sealed import sleep_label

# Where a night stands: writing probes (``notes_done`` notes finished) or training.
PROBES, TRAINING = "probes", "training"
SUFFIX = ".checkpoint"
LESSON_POOLS = ("lessons", "samples", "negative_lessons", "anchors")


@dataclass
class NightState:
    """Everything a night needs to go on from where it stopped, and nothing it can redo."""

    # What the night was built on: resuming with another base model, other experts
    # learned before tonight or another seed would mix two different nights. Another
    # training backend restarts the training (its blobs below are in the old one's format).
    model: str
    experts: list[int]
    seed: int = 0
    backend_name: str = "torch"  # "torch" or "mlx"; checkpoints from before MLX are torch's
    stage: str = PROBES
    notes_done: int = 0
    asked: int = 0  # questions written about the notes (none: small talk, nothing to learn)
    probes: list[Probe] = field(default_factory=list)  # to train on
    # Notes the teacher could answer none of its questions about: not learned, so carried.
    unprobed: list[str] = field(default_factory=list)
    held_out: list[Probe] = field(default_factory=list)  # to verify with
    held_out_negatives: list[str] = field(default_factory=list)  # questions never answered
    changed: list[str] = field(default_factory=list)  # earlier probes today's notes change
    lessons: list[Lesson] = field(default_factory=list)
    samples: list[Lesson] = field(default_factory=list)
    negative_lessons: list[Lesson] = field(default_factory=list)
    anchors: list[Lesson] = field(default_factory=list)
    anchor_baseline: float = 0.0
    step: int = 0  # training steps done; the batch order is a function of (seed, step)
    # Early stopping: the best check so far (``seeding.check_score``), its step and its
    # training state.
    best_score: float = -2.0
    best_step: int = 0
    best: bytes = b""  # in the backend's own format
    train_tokens: int = 0
    report: bytes = b"{}"  # the night's report so far (SleepReport JSON)
    backend: bytes = b""  # the new expert and its optimizer, in the backend's own format

    def basis(self) -> tuple[str, list[int], int]:
        return self.model, self.experts, self.seed

    def with_training_restarted(self, backend_name: str) -> NightState:
        """This night for another backend: its probes, lessons and anchors (token ids and
        targets, the same on either) kept; its training, in the old backend's format, not."""
        return replace(
            self,
            backend_name=backend_name,
            samples=[],
            step=0,
            best_score=-2.0,
            best_step=0,
            best=b"",
            train_tokens=0,
            backend=b"",
        )


def encode(state: NightState) -> bytes:
    """One ``.npz`` (no pickle): lesson arrays, the backend's blob, the rest as JSON."""
    meta = {
        "model": state.model,
        "experts": state.experts,
        "seed": state.seed,
        "backend_name": state.backend_name,
        "stage": state.stage,
        "notes_done": state.notes_done,
        "asked": state.asked,
        "probes": [p.to_json() for p in state.probes],
        "unprobed": state.unprobed,
        "held_out": [p.to_json() for p in state.held_out],
        "held_out_negatives": state.held_out_negatives,
        "changed": state.changed,
        "anchor_baseline": state.anchor_baseline,
        "step": state.step,
        "best_score": state.best_score,
        "best_step": state.best_step,
        "train_tokens": state.train_tokens,
        "report": state.report.decode(),
    }
    arrays = {
        "meta": np.frombuffer(json.dumps(meta).encode(), np.uint8),
        "backend": np.frombuffer(state.backend, np.uint8),
        "best": np.frombuffer(state.best, np.uint8),
    }
    for pool in LESSON_POOLS:
        arrays.update(_lesson_arrays(pool, getattr(state, pool)))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def decode(data: bytes) -> NightState:
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        meta = json.loads(arrays["meta"].tobytes())
        return NightState(
            model=meta["model"],
            experts=meta["experts"],
            seed=meta["seed"],
            backend_name=meta.get("backend_name", "torch"),
            stage=meta["stage"],
            notes_done=meta["notes_done"],
            asked=meta["asked"],
            probes=[Probe.from_json(p) for p in meta["probes"]],
            unprobed=meta.get("unprobed", []),
            held_out=[Probe.from_json(p) for p in meta["held_out"]],
            held_out_negatives=meta["held_out_negatives"],
            changed=meta["changed"],
            anchor_baseline=meta["anchor_baseline"],
            step=meta["step"],
            best_score=meta.get("best_score", meta.get("best_recall", -2.0)),
            best_step=meta["best_step"],
            best=arrays["best"].tobytes(),
            train_tokens=meta["train_tokens"],
            report=meta["report"].encode(),
            backend=arrays["backend"].tobytes(),
            **{pool: _lessons_from(arrays, pool) for pool in LESSON_POOLS},
        )


def _lesson_arrays(name: str, lessons: list[Lesson]) -> dict[str, np.ndarray]:
    """Ragged lessons as flat arrays plus lengths."""
    k = lessons[0].targets.token_ids.shape[1] if lessons else 0
    return {
        f"{name}.prompt_lengths": np.array([len(x.prompt) for x in lessons], np.int64),
        f"{name}.prompts": np.array([t for x in lessons for t in x.prompt], np.int64),
        f"{name}.answer_lengths": np.array([len(x.answer) for x in lessons], np.int64),
        f"{name}.answers": np.array([t for x in lessons for t in x.answer], np.int64),
        f"{name}.token_ids": np.concatenate(
            [x.targets.token_ids for x in lessons] or [np.zeros((0, k), np.int64)]
        ),
        f"{name}.logprobs": np.concatenate(
            [x.targets.logprobs for x in lessons] or [np.zeros((0, k), np.float32)]
        ),
    }


def _lessons_from(arrays, name: str) -> list[Lesson]:
    if not len(arrays[f"{name}.answer_lengths"]):
        return []
    prompts = np.split(arrays[f"{name}.prompts"], np.cumsum(arrays[f"{name}.prompt_lengths"])[:-1])
    bounds = np.cumsum(arrays[f"{name}.answer_lengths"])[:-1]
    answers = np.split(arrays[f"{name}.answers"], bounds)
    token_ids = np.split(arrays[f"{name}.token_ids"], bounds)
    logprobs = np.split(arrays[f"{name}.logprobs"], bounds)
    return [
        Lesson(p.tolist(), a.tolist(), TopK(t, lp))
        for p, a, t, lp in zip(prompts, answers, token_ids, logprobs, strict=True)
    ]


class Checkpoints:
    """The paused nights' checkpoint files and the sealed keys in their ``sleeps`` rows."""

    def __init__(self, directory: Path, database: Database, store: MemoryStore) -> None:
        self.directory = directory
        self.database = database
        self.store = store

    def _pointer(self, sleep_id: int) -> dict | None:
        """The row's {file, key}; None if it has none or it fails authentication (the file,
        unreadable then, is removed as unreferenced)."""
        row = self.database.execute(
            "SELECT checkpoint FROM sleeps WHERE id = ?", [sleep_id]
        ).fetchone()
        if row is None or row[0] is None:
            return None
        try:
            return json.loads(self.store.unseal(sleep_label("checkpoint", sleep_id), row[0]))
        except TamperedError:
            return None

    def save(self, sleep_id: int, state: NightState) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key, nonce = AESGCM.generate_key(256), os.urandom(12)
        name = f"sleep-{sleep_id}-{os.urandom(6).hex()}{SUFFIX}"
        sealed = nonce + AESGCM(key).encrypt(nonce, encode(state), name.encode())
        partial = self.directory / f".{name}.partial"
        with open(partial, "wb", opener=lambda p, f: os.open(p, f, 0o600)) as handle:
            handle.write(sealed)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.directory / name)
        previous = self._pointer(sleep_id)
        pointer = json.dumps({"file": name, "key": key.hex()}).encode()
        self.database.execute(
            "UPDATE sleeps SET checkpoint = ? WHERE id = ?",
            [self.store.seal(sleep_label("checkpoint", sleep_id), pointer), sleep_id],
        )
        if previous:
            (self.directory / previous["file"]).unlink(missing_ok=True)

    def load(self, sleep_id: int) -> NightState | None:
        """The night's checkpoint, or None if it has none or it cannot be read back whole."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        pointer = self._pointer(sleep_id)
        if pointer is None:
            return None
        try:
            sealed = (self.directory / pointer["file"]).read_bytes()
            data = AESGCM(bytes.fromhex(pointer["key"])).decrypt(
                sealed[:12], sealed[12:], pointer["file"].encode()
            )
        except (OSError, InvalidTag):
            return None
        return decode(data)

    def discard(self, sleep_id: int) -> None:
        """Forget the key (crypto-shred), then delete the file."""
        pointer = self._pointer(sleep_id)
        self.database.execute("UPDATE sleeps SET checkpoint = NULL WHERE id = ?", [sleep_id])
        if pointer:
            (self.directory / pointer["file"]).unlink(missing_ok=True)

    def remove_unreferenced(self) -> None:
        """Delete files no row points to (a save or a discard killed half-way)."""
        if not self.directory.is_dir():
            return
        rows = self.database.execute("SELECT id FROM sleeps WHERE checkpoint IS NOT NULL")
        pointers = [self._pointer(sleep_id) for (sleep_id,) in rows.fetchall()]
        keep = {pointer["file"] for pointer in pointers if pointer}
        for entry in self.directory.iterdir():
            if entry.name not in keep:
                entry.unlink()
