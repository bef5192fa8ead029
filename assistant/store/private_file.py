"""A file that C libraries can open by path, holding decrypted bytes without touching a disk.

llama.cpp and the GGUF writer take file paths. On Linux the path is
``/proc/self/fd/N`` of an anonymous memory file (``memfd_create``): it has no
name in any directory, lives in RAM (or swap) and vanishes when closed. Where
no such file exists (macOS, Windows) the most private thing the OS allows is
used: a 0600 file in the user's own temporary directory, deleted as soon as
the library is done with it. The README says so.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IN_MEMORY = hasattr(os, "memfd_create") and sys.platform.startswith("linux")


@contextmanager
def private_file(data: bytes = b"") -> Iterator[Path]:
    """A path holding ``data``; whatever is written to it can be read back before exit."""
    if IN_MEMORY:
        fd = os.memfd_create("assistant", os.MFD_CLOEXEC)
        path = Path(f"/proc/self/fd/{fd}")
    else:
        fd, name = tempfile.mkstemp(prefix=".assistant-")
        path = Path(name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield path
    finally:
        os.close(fd)
        if not IN_MEMORY:
            path.unlink(missing_ok=True)


def read_back(path: Path) -> bytes:
    """Everything in a ``private_file`` (which may have been rewritten through its path)."""
    with open(path, "rb") as handle:
        return handle.read()
