"""``ollama:NAME[:TAG]``: the GGUF blob Ollama keeps for a pulled model.

Ollama stores a manifest per model and tag (``manifests/<registry>/<namespace>/<name>/<tag>``)
whose layer of media type ``application/vnd.ollama.image.model`` names the blob holding
the weights as a GGUF (``blobs/sha256-<hex>``). The store is ``$OLLAMA_MODELS`` or
``~/.ollama/models``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from assistant.errors import ModelError

PREFIX = "ollama:"
_REGISTRY = "registry.ollama.ai"
_MODEL_LAYER = "application/vnd.ollama.image.model"


def models_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def default_name(reference: str) -> str:
    """A registry name for ``ollama:NAME[:TAG]``: the name, with the tag unless it is latest."""
    name, _, tag = reference.removeprefix(PREFIX).partition(":")
    name = name.rsplit("/", 1)[-1]
    return name if tag in ("", "latest") else f"{name}-{tag}"


def resolve(reference: str) -> Path:
    """The GGUF blob of ``ollama:NAME[:TAG]`` (NAME may be ``namespace/name`` or a host path)."""
    name, _, tag = reference.removeprefix(PREFIX).partition(":")
    if not name:
        raise ModelError(f"{reference!r} names no model; write ollama:NAME or ollama:NAME:TAG.")
    parts = name.split("/")
    if len(parts) == 1:
        parts = [_REGISTRY, "library", *parts]
    elif len(parts) == 2:
        parts = [_REGISTRY, *parts]
    root = models_dir()
    manifest_path = root.joinpath("manifests", *parts, tag or "latest")
    if not manifest_path.is_file():
        raise ModelError(
            f"Ollama has no model {name}:{tag or 'latest'} in {root}.",
            hint="`ollama list` shows what is pulled; set OLLAMA_MODELS if Ollama keeps"
            " its models elsewhere.",
        )
    try:
        layers = json.loads(manifest_path.read_text())["layers"]
        digest = next(layer["digest"] for layer in layers if layer["mediaType"] == _MODEL_LAYER)
    except (ValueError, KeyError, TypeError, StopIteration):
        raise ModelError(f"Ollama's manifest {manifest_path} names no model weights.") from None
    blob = root / "blobs" / digest.replace(":", "-")
    if not blob.is_file():
        raise ModelError(
            f"Ollama's manifest for {name} points at {blob.name}, which is missing.",
            hint=f"Pull it again with `ollama pull {name}`.",
        )
    return blob
