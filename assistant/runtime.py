"""Opens what a command needs, on demand: paths, database, key, registries, engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from assistant.config import Config
from assistant.engine import ChatEngine, ExpertSpec
from assistant.errors import ModelError, NoModelError
from assistant.experts.registry import ExpertRegistry
from assistant.models.registry import ModelRecord, ModelRegistry
from assistant.paths import Paths
from assistant.store.db import Database
from assistant.store.keys import (
    PassphrasePrompt,
    holds_records_from_before_sealing,
    mark_all_sealed,
    unlock,
)
from assistant.store.lock import StoreBusyError, WriterLock
from assistant.store.memory import MemoryStore


@dataclass
class Runtime:
    paths: Paths = field(default_factory=lambda: Paths.discover().ensure())
    passphrase_prompt: PassphrasePrompt | None = None
    handed_key: bytes | None = None  # the master key, passed on by the process that unlocked it
    notice: Callable[[str], None] = lambda _: None  # one-line news for the user

    @cached_property
    def config(self) -> Config:
        return Config.load(self.paths.config_file)

    @cached_property
    def database(self) -> Database:
        return Database(self.paths.database)

    @cached_property
    def models(self) -> ModelRegistry:
        return ModelRegistry(self.database, self.paths.models_dir)

    @cached_property
    def experts(self) -> ExpertRegistry:
        return ExpertRegistry(self.database)

    @cached_property
    def master_key(self) -> bytes:
        return unlock(self.database, self.paths.key_file, self.passphrase_prompt, self.handed_key)

    @cached_property
    def memory(self) -> MemoryStore:
        store = MemoryStore(self.database, self.master_key)
        if holds_records_from_before_sealing(self.database, self.master_key):
            self._seal_records_from_before(store)
        return store

    def _seal_records_from_before(self, store: MemoryStore) -> None:
        """Seal the sleep rows and experts an older version wrote unsealed, once; the key
        check then records it, and from then on an unsealed one is refused as an edit."""
        from assistant.sleep.state import SleepLog

        try:
            with self.exclusive("sealing older records"):
                SleepLog.seal_rows_from_before(self.database, store)
                if self.experts.seal_plaintext(store):
                    self.notice("Sealed the experts learned before experts were encrypted.")
                mark_all_sealed(self.database, self.master_key)
        except StoreBusyError:
            pass  # the process holding the lock (a sleep) does it

    def exclusive(self, doing: str) -> WriterLock:
        """The writer lock, for ``doing`` ("a sleep", "an adapter reset"): one process at a
        time changes what a night depends on. Raises StoreBusyError naming what holds it."""
        return WriterLock(self.paths.writer_lock, doing)

    def require_model(self) -> ModelRecord:
        """The active model; with none registered yet, the packaged starter, registered now."""
        model = self.models.active()
        if model is not None:
            return model
        if self.models.list():
            raise ModelError(
                "No model is active.", hint="Choose one with `assistant model use NAME`."
            )
        model = self.models.add_starter()
        if model is None:
            raise NoModelError("No model is registered yet, and the starter model is missing.")
        self.notice(
            f"Using the starter model {model.name} (SmolLM2-135M-Instruct, installed with the"
            " assistant); `assistant model add` adds a better one."
        )
        return model

    def training_dir(self, model: ModelRecord) -> Path:
        """The model's Hugging Face directory for training, made once from its GGUF if needed."""
        return self.models.training_dir(model, self.notice)

    def expert_specs(self) -> list[ExpertSpec]:
        """Every committed expert of the active model, as chat applies it."""
        model = self.require_model()
        return [self.experts.chat_spec(self.memory, e) for e in self.experts.active(model.name)]

    def load_engine(self) -> ChatEngine:
        """The active model with every committed expert applied at its scale."""
        return ChatEngine(
            self.require_model().gguf_path,
            self.expert_specs(),
            n_ctx=self.config.n_ctx,
            n_threads=self.config.threads,
        )
