"""Atomic file replacement shared by the validation report and the feature store files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write `path` through a temporary sibling file and swap it in with `os.replace`.

    Readers (a serving process, a dashboard) see either the old file or the complete new
    one, never a half-written file. The temporary file lives in the same directory so the
    final rename stays on one filesystem, which is what makes it atomic.

    Args:
        path: The file to create or replace.
        write: Writes the full content to the temporary path it is given.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically; see `atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
