"""Experts at rest: each expert's files sealed under the expert's own key (AES-256-GCM).

A trained expert is memory too: with its files and the public base model anyone
could ask it about the user. So an expert directory holds only sealed files, one
per file it stands for (``adapter_config.json.sealed``, ...). The expert's key
exists only wrapped by the master key in its registry row, next to the SHA-256
of each sealed file; a file that does not match is refused before it is
decrypted, and deleting the row crypto-shreds the files.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import TamperedError
from assistant.experts.peft import CONFIG_FILE, WEIGHTS_FILE, PeftAdapter
from assistant.store.db import fsync_directory
from assistant.store.keys import KEY_BYTES

GGUF_FILE = "expert.gguf"  # what chat loads
SUFFIX = ".sealed"


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _ad(name: str) -> bytes:
    return f"assistant/expert-file/v1:{name}".encode()


def seal_expert(directory: Path, key: bytes, adapter: PeftAdapter, gguf: bytes) -> dict[str, str]:
    """Write the expert sealed into ``directory``, durably; returns {file: sha256 of its
    sealed bytes} for the registry row."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    cipher = AESGCM(key)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    hashes = {}
    files = {CONFIG_FILE: adapter.config_bytes(), WEIGHTS_FILE: adapter.weights, GGUF_FILE: gguf}
    for name, data in files.items():
        nonce = os.urandom(12)
        sealed = nonce + cipher.encrypt(nonce, data, _ad(name))
        fd = os.open(directory / (name + SUFFIX), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(sealed)
            handle.flush()
            os.fsync(handle.fileno())
        hashes[name] = hashlib.sha256(sealed).hexdigest()
    fsync_directory(directory)
    return hashes


@dataclass(frozen=True)
class SealedExpert:
    """An expert's sealed files with the key that opens them; each read decrypts one file
    into memory."""

    directory: Path
    key: bytes
    hashes: dict[str, str]
    label: str  # how messages name the expert

    def path(self, name: str) -> Path:
        return self.directory / (name + SUFFIX)

    def read(self, name: str) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        path = self.path(name)
        if not path.is_file():
            raise TamperedError(
                f"The file {path.name} of {self.label} is missing.",
                hint="Restore the data directory from a backup, or remove the expert with"
                " `assistant adapters reset`.",
            )
        sealed = path.read_bytes()
        if hashlib.sha256(sealed).hexdigest() != self.hashes.get(name):
            raise TamperedError(
                f"The file {path.name} of {self.label} does not match its registry entry:"
                " it was changed or damaged, so it is not used.",
                hint="Restore the data directory from a backup, or remove the expert with"
                " `assistant adapters reset`.",
            )
        try:
            return AESGCM(self.key).decrypt(sealed[:12], sealed[12:], _ad(name))
        except InvalidTag:
            raise TamperedError(f"The file {path.name} of {self.label} fails to decrypt.") from None

    def config(self) -> dict:
        import json

        return json.loads(self.read(CONFIG_FILE))

    def adapter(self) -> PeftAdapter:
        return PeftAdapter.from_files(self.read(CONFIG_FILE), self.read(WEIGHTS_FILE))

    def gguf(self) -> bytes:
        return self.read(GGUF_FILE)
