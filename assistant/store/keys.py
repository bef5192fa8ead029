"""The master key: from the OS keychain, a passphrase, or (with consent) a key file.

Whichever source is chosen at first use is recorded in the database, with the
KDF parameters and salt for a passphrase, plus a small AES-GCM "key check"
blob so a wrong key is refused before anything is read or written.

``key rotate`` (``rotate.py``) stores a new key next to the old one, switches
the database to it in one transaction and then shreds the old one; the
``key_rotation`` meta row says how far it got, so a rotation killed half-way
is discarded (before its commit) or finished (after it) and never strands a key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from assistant.errors import KeyStoreError, WrongKeyError
from assistant.store.db import Database, fsync_directory

KEY_SOURCES = ("keyring", "passphrase", "keyfile")
KEYRING_SERVICE = "assistant-memory"
PASSPHRASE_ENV = "ASSISTANT_PASSPHRASE"
# The key check's associated data also says what the store holds. v2: every record written
# before records were sealed (sleep rows, experts) has been sealed since, so an unsealed one
# is an edit, refused. A v1 check (an older store) has them sealed at its next unlock.
_KEY_CHECK_AD = b"assistant/key-check/v2"
_BEFORE_SEALING_AD = b"assistant/key-check/v1"
KEY_BYTES = 32  # AES-256
# scrypt cost for new keys: ~0.5 s and 128 MiB; stored per database, so stores made with
# a lower cost (n=2**15 before) still open, and `key rotate` moves them to this one.
SCRYPT_PARAMS = {"n": 2**17, "r": 8, "p": 1}
ROTATION_META = "key_rotation"

PassphrasePrompt = Callable[[bool], str]
"""Asks the user for a passphrase; the argument says whether it is a new one (confirm it)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def keyring_usable() -> bool:
    """True when a real OS keychain backend is present (not keyring's fail/null backends)."""
    try:
        import keyring
        from keyring.backends import chainer, fail
    except ImportError:
        return False
    backend = keyring.get_keyring()
    if isinstance(backend, fail.Keyring):
        return False
    if isinstance(backend, chainer.ChainerBackend) and not backend.backends:
        return False
    return getattr(backend, "priority", 1) > 0


def derive_from_passphrase(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    kdf = Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"])
    return kdf.derive(passphrase.encode("utf-8"))


def key_check(key: bytes) -> str:
    """A small blob only ``key`` opens: how a wrong key is refused before any use."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return _b64(nonce + AESGCM(key).encrypt(nonce, b"ok", _KEY_CHECK_AD))


def _verify(key: bytes, check: str) -> None:
    if _check_version(key, check) is None:
        raise WrongKeyError("Wrong passphrase or key: this memory was locked with another key.")


def _check_version(key: bytes, check: str) -> bytes | None:
    """The associated data ``key`` opens the check with; None if it opens it with neither."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    blob = _unb64(check)
    for ad in (_KEY_CHECK_AD, _BEFORE_SEALING_AD):
        try:
            AESGCM(key).decrypt(blob[:12], blob[12:], ad)
            return ad
        except InvalidTag:
            continue
    return None


def holds_records_from_before_sealing(database: Database, key: bytes) -> bool:
    """Whether this store still has to seal what an older version wrote unsealed."""
    return _check_version(key, database.get_meta("key_check") or "") == _BEFORE_SEALING_AD


def mark_all_sealed(database: Database, key: bytes) -> None:
    """Record, under the key, that nothing unsealed is legitimate any more."""
    database.set_meta("key_check", key_check(key))


def current_source(database: Database) -> str | None:
    return database.get_meta("key_source")


def choose_default_source(can_ask: bool = False) -> str:
    """Passphrase if one is given, else the OS keychain, else a passphrase we can ask for."""
    if os.environ.get(PASSPHRASE_ENV):
        return "passphrase"
    if keyring_usable():
        return "keyring"
    if can_ask:
        return "passphrase"
    raise KeyStoreError(
        "No key store is set up for the encrypted memory and no OS keychain was found.",
        hint="Run `assistant init --passphrase` (or set ASSISTANT_PASSPHRASE), or "
        "`assistant init --key-file` to keep the key in a file (weaker: anyone who can "
        "read the file can read your memory).",
    )


def _get_passphrase(prompt: PassphrasePrompt | None, new: bool) -> str:
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if passphrase:
        return passphrase
    if prompt is None:
        raise KeyStoreError(
            "This memory is locked with a passphrase.",
            hint=f"Set {PASSPHRASE_ENV} or run the command in a terminal to be asked for it.",
        )
    passphrase = prompt(new)
    if not passphrase:
        raise KeyStoreError("An empty passphrase cannot protect your memory.")
    return passphrase


def create_key(
    source: str, key_file: Path, keyring_id: str, passphrase: str | None
) -> tuple[bytes, dict[str, str]]:
    """A new master key, stored in ``source`` (a key file goes to ``key_file``, a keychain
    entry under ``keyring_id``), and the meta rows that find it again."""
    if source == "passphrase":
        assert passphrase
        salt = secrets.token_bytes(16)
        params = dict(SCRYPT_PARAMS)
        kdf = json.dumps({"name": "scrypt", **params, "salt": _b64(salt)})
        return derive_from_passphrase(passphrase, salt, params), {"kdf": kdf}
    key = secrets.token_bytes(KEY_BYTES)
    if source == "keyring":
        import keyring

        keyring.set_password(KEYRING_SERVICE, keyring_id, _b64(key))
        return key, {"keyring_id": keyring_id}
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(key_file.parent)
    return key, {}


def initialize(
    database: Database,
    key_file: Path,
    source: str,
    prompt: PassphrasePrompt | None = None,
) -> bytes:
    """Create a new master key in ``source`` and record how to find it again."""
    if source not in KEY_SOURCES:
        raise KeyStoreError(
            f"Unknown key source {source!r}; choose one of {', '.join(KEY_SOURCES)}."
        )
    if current_source(database):
        raise KeyStoreError(
            f"The memory already has a key ({current_source(database)}).",
            hint="Run `assistant key rotate` to replace it.",
        )
    passphrase = _get_passphrase(prompt, new=True) if source == "passphrase" else None
    key, meta = create_key(source, key_file, str(uuid.uuid4()), passphrase)
    meta.update(key_source=source, key_check=key_check(key))
    with database.transaction() as conn:
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
    return key


def pending_key_file(key_file: Path) -> Path:
    """Where ``key rotate`` keeps the new key file until the database has switched to it."""
    return key_file.with_name(key_file.name + ".new")


def rotation(database: Database) -> dict | None:
    """The unfinished ``key rotate``, if any: {"state": "pending" | "committed", ...}."""
    value = database.get_meta(ROTATION_META)
    return json.loads(value) if value else None


def _delete_keyring_entry(key_id: str) -> None:
    import keyring
    from keyring.errors import PasswordDeleteError

    with contextlib.suppress(PasswordDeleteError):  # already gone
        keyring.delete_password(KEYRING_SERVICE, key_id)


def finish_rotation(database: Database, key_file: Path) -> bool:
    """Shred the old key of a rotation whose database switch committed (the new key is in
    the database's key check); idempotent. Returns whether there was one to finish."""
    state = rotation(database)
    if state is None or state["state"] != "committed":
        return False
    if state.get("old_keyring_id"):
        _delete_keyring_entry(state["old_keyring_id"])
    pending = pending_key_file(key_file)
    if pending.exists():
        with contextlib.suppress(FileNotFoundError):  # another process finished it
            os.replace(pending, key_file)  # atomic: the old key file's bytes are gone
        fsync_directory(key_file.parent)
    database.execute("DELETE FROM meta WHERE key = ?", [ROTATION_META])
    return True


def discard_rotation(database: Database, key_file: Path) -> None:
    """Remove the new key of a rotation killed before its commit; the old key still rules."""
    state = rotation(database)
    if state is None or state["state"] != "pending":
        return
    if state.get("keyring_id"):
        _delete_keyring_entry(state["keyring_id"])
    pending_key_file(key_file).unlink(missing_ok=True)
    database.execute("DELETE FROM meta WHERE key = ?", [ROTATION_META])


def unattended(database: Database) -> bool:
    """Whether the scheduled job can unlock the memory with no one there: a keychain or key
    file store. A passphrase is never stored (and the job's environment never holds one)."""
    return current_source(database) in ("keyring", "keyfile")


def unlock(
    database: Database,
    key_file: Path,
    prompt: PassphrasePrompt | None = None,
    handed: bytes | None = None,
) -> bytes:
    """Return the verified master key, creating one on first use. ``handed`` is a key the
    process that unlocked the memory passed on (the app's night, over a pipe)."""
    source = current_source(database)
    if handed is not None and source is not None:
        _verify(handed, database.get_meta("key_check") or "")
        return handed
    if source is None:
        return initialize(database, key_file, choose_default_source(prompt is not None), prompt)
    finish_rotation(database, key_file)
    if source == "passphrase":
        kdf = json.loads(database.get_meta("kdf") or "{}")
        params = {name: int(kdf[name]) for name in ("n", "r", "p")}
        key = derive_from_passphrase(
            _get_passphrase(prompt, new=False), _unb64(kdf["salt"]), params
        )
    elif source == "keyring":
        import keyring

        stored = keyring.get_password(KEYRING_SERVICE, database.get_meta("keyring_id") or "")
        if stored is None:
            raise KeyStoreError(
                "The OS keychain has no key for this memory.",
                hint="It was created on another account or the keychain entry was removed.",
            )
        key = _unb64(stored)
    else:
        if not key_file.exists():
            raise KeyStoreError(f"The key file {key_file} is missing.")
        if stat.S_IMODE(key_file.stat().st_mode) & 0o077:
            raise KeyStoreError(
                f"The key file {key_file} is readable by other users.",
                hint=f"Run `chmod 600 {key_file}`.",
            )
        key = key_file.read_bytes()
        if len(key) != KEY_BYTES:
            raise KeyStoreError(
                f"The key file {key_file} holds {len(key)} bytes; a memory key is {KEY_BYTES}.",
                hint="It was cut short or replaced: restore it from your backup of the key file.",
            )
    _verify(key, database.get_meta("key_check") or "")
    return key
