"""Where the assistant keeps its files.

``platformdirs`` picks the per-OS locations; ``ASSISTANT_HOME`` puts every
path under one directory instead (tests and portable installs use it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    config_dir: Path
    cache_dir: Path

    @classmethod
    def discover(cls) -> Paths:
        home = os.environ.get("ASSISTANT_HOME")
        if home:
            root = Path(home).expanduser().resolve()
            return cls(root / "data", root / "config", root / "cache")
        import platformdirs

        return cls(
            Path(platformdirs.user_data_dir("assistant", appauthor=False)),
            Path(platformdirs.user_config_dir("assistant", appauthor=False)),
            Path(platformdirs.user_cache_dir("assistant", appauthor=False)),
        )

    @property
    def database(self) -> Path:
        """The SQLite file: encrypted memory, model and adapter registries."""
        return self.data_dir / "assistant.db"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def experts_dir(self) -> Path:
        return self.data_dir / "experts"

    @property
    def checkpoints_dir(self) -> Path:
        """A paused sleep's work, encrypted (see ``assistant.sleep.checkpoint``)."""
        return self.data_dir / "checkpoints"

    @property
    def writer_lock(self) -> Path:
        """Held by whatever changes what a night depends on (``assistant.store.lock``); the
        name is from when only a sleep took it, kept so versions agree on one lock."""
        return self.data_dir / "sleep.lock"

    @property
    def key_file(self) -> Path:
        """Only used when the user explicitly chose a key file over keychain/passphrase."""
        return self.config_dir / "master.key"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.json"

    def ensure(self) -> Paths:
        for directory in (self.data_dir, self.config_dir, self.cache_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self

    def describe(self) -> dict[str, str]:
        return {
            "data": str(self.data_dir),
            "config": str(self.config_dir),
            "cache": str(self.cache_dir),
            "database": str(self.database),
            "models": str(self.models_dir),
            "experts": str(self.experts_dir),
            "sleep checkpoints": str(self.checkpoints_dir),
            "config file": str(self.config_file),
            "key file (if chosen)": str(self.key_file),
        }
