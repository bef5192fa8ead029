"""Everything sealed under the master key, and the one registry of where it lives.

A sealed blob is ``nonce || AES-GCM(master key, data, ad)``; its associated data
names the row it belongs to, so a blob moved to another row fails. ``key
rotate`` re-wraps every column listed in ``SEALED_COLUMNS``: a new column
sealed under the master key must be added there, or rotation leaves it
unreadable (rotation unwraps each blob first, so a wrong AD fails loudly before
anything changes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assistant.errors import TamperedError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def epoch_ad(epoch_id: int) -> bytes:
    return f"assistant/epoch/v1:{epoch_id}".encode()


def record_ad(label: str) -> bytes:
    """The AD of a record sealed with ``MemoryStore.seal(label, ...)``."""
    return f"assistant/record/v1:{label}".encode()


def wrap(cipher: AESGCM, ad: bytes, data: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + cipher.encrypt(nonce, data, ad)


def unwrap(cipher: AESGCM, ad: bytes, sealed: bytes, failure: str) -> bytes:
    """The plaintext, or TamperedError(failure) (which names the row, never its content)."""
    from cryptography.exceptions import InvalidTag

    sealed = bytes(sealed)
    try:
        return cipher.decrypt(sealed[:12], sealed[12:], ad)
    except InvalidTag:
        raise TamperedError(failure) from None


Row = Mapping[str, Any]


@dataclass(frozen=True)
class SealedColumn:
    """A BLOB column sealed under the master key; ``ad`` computes a blob's AD from its row
    (every column of it, by name)."""

    table: str
    column: str
    key: str  # the primary key column: which row to update
    ad: Callable[[Row], bytes]


def _record(prefix: str, key: str = "id") -> Callable[[Row], bytes]:
    """The AD of ``MemoryStore.seal(f"{prefix}:{row[key]}", ...)``."""
    return lambda row: record_ad(f"{prefix}:{row[key]}")


# The sealed columns of a night's row in ``sleeps``, each with the label its blobs carry.
_SLEEP_LABELS = {
    "report": "sleep-report",
    "probes": "sleep-probes",
    "checkpoint": "sleep-checkpoint",
    "state_seal": "sleep-state",
    "expert_key": "sleep-expert-key",
}


EXPERT_PROBES = "expert-probes"  # the label of an expert's kept probes


def expert_probes_label(expert_id: int) -> str:
    return f"{EXPERT_PROBES}:{expert_id}"


def sleep_label(column: str, sleep_id: int) -> str:
    """What the blob in ``column`` of night ``sleep_id``'s row is sealed to."""
    return f"{_SLEEP_LABELS[column]}:{sleep_id}"


SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    SealedColumn("epochs", "wrapped_key", "id", lambda row: epoch_ad(row["id"])),
    *(
        SealedColumn("sleeps", column, "id", _record(label))
        for column, label in _SLEEP_LABELS.items()
    ),
    SealedColumn("expert_probes", "sealed", "expert_id", _record(EXPERT_PROBES, "expert_id")),
    SealedColumn("experts", "wrapped_key", "id", lambda row: record_ad(expert_key_label(row))),
)


def expert_key_label(row: Row) -> str:
    """What an expert's wrapped key is bound to: its row's id and model, its files' hashes
    (``hashes`` is the row's canonical JSON of them)."""
    return f"expert-key:{row['id']}:{row['model_name']}:{row['hashes']}"


# BLOB columns not sealed under the master key (turns are under their epoch's key).
NOT_MASTER_SEALED = frozenset({("turns", "nonce"), ("turns", "ciphertext")})
