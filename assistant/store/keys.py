"""The master key: from the OS keychain, a passphrase, or (with consent) a key file.

Whichever source is chosen at first use is recorded in the database, with the
KDF parameters and salt for a passphrase, plus a small AES-GCM "key check"
blob so a wrong key is refused before anything is read or written.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from assistant.errors import KeyStoreError, WrongKeyError
from assistant.store.db import Database

KEY_SOURCES = ("keyring", "passphrase", "keyfile")
KEYRING_SERVICE = "assistant-memory"
PASSPHRASE_ENV = "ASSISTANT_PASSPHRASE"
_KEY_CHECK_AD = b"assistant/key-check/v1"
# scrypt cost: ~0.1 s and 32 MiB on a laptop; stored per database so it can grow.
SCRYPT_PARAMS = {"n": 2**15, "r": 8, "p": 1}

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


def _key_check(key: bytes) -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    return _b64(nonce + AESGCM(key).encrypt(nonce, b"ok", _KEY_CHECK_AD))


def _verify(key: bytes, check: str) -> None:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    blob = _unb64(check)
    try:
        AESGCM(key).decrypt(blob[:12], blob[12:], _KEY_CHECK_AD)
    except InvalidTag:
        raise WrongKeyError(
            "Wrong passphrase or key: this memory was locked with another key."
        ) from None


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
            hint="Keys are not replaced in place; reset the memory to start over.",
        )
    meta: dict[str, str] = {"key_source": source}
    if source == "passphrase":
        salt = secrets.token_bytes(16)
        params = dict(SCRYPT_PARAMS)
        key = derive_from_passphrase(_get_passphrase(prompt, new=True), salt, params)
        meta["kdf"] = json.dumps({"name": "scrypt", **params, "salt": _b64(salt)})
    else:
        key = secrets.token_bytes(32)
        if source == "keyring":
            import keyring

            key_id = str(uuid.uuid4())
            keyring.set_password(KEYRING_SERVICE, key_id, _b64(key))
            meta["keyring_id"] = key_id
        else:
            key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key)
    meta["key_check"] = _key_check(key)
    with database.transaction() as conn:
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
    return key


def unlock(database: Database, key_file: Path, prompt: PassphrasePrompt | None = None) -> bytes:
    """Return the verified master key, creating one on first use."""
    source = current_source(database)
    if source is None:
        return initialize(database, key_file, choose_default_source(prompt is not None), prompt)
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
    _verify(key, database.get_meta("key_check") or "")
    return key
