"""Atomic file writes: a reader sees the old file or the complete new one, never part of one.

Every file that another process may read while it is being replaced (cached data, pipeline
outputs, reports, the registry's aliases, benchmark results) is written here: the content
goes to a temporary sibling (same directory, so the rename stays on one filesystem), is
flushed to disk and renamed over the target with `os.replace`. On any failure the temporary
file is removed and the old file is left as it was. Whole directories are built in a
temporary sibling and swapped into place (`swap_directory`, `replace_directory`).

The module is named `atomic`, not `io`, so that running a script from inside `llata_core/`
can never shadow the standard library's `io`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

FILE_MODE = 0o644  # mkstemp creates 0600; data, reports and aliases are read by other users


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[Path], object], *, keep_suffix: bool = False
) -> None:
    """Create or replace `path` with what `write` puts into a temporary sibling file.

    Args:
        path: The file to create or replace; missing parent directories are created.
        write: Writes the full content to the temporary path it is given.
        keep_suffix: End the temporary name with `path`'s suffix, for writers that pick the
            format from the name (matplotlib). Otherwise it ends with `.tmp`, so that a
            temporary file left by a killed process never matches a reader's `*.json` glob.

    Raises:
        Whatever `write` raises; `path` is then unchanged and no temporary file is left.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{target.suffix}" if keep_suffix else ".tmp"
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        _fsync(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)  # makes the rename itself survive a power loss


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Create or replace `path` with `data`; see `atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Create or replace `path` with `text` in UTF-8; see `atomic_write`."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(
    path: str | os.PathLike[str],
    document: Any,
    *,
    default: Callable[[Any], Any] | None = None,
    trailing_newline: bool = True,
) -> None:
    """Create or replace `path` with `document` as indented JSON; see `atomic_write`.

    Args:
        path: The JSON file.
        document: Anything `json.dumps` accepts (with `default`).
        default: Converts values JSON has no type for (e.g. `str` for dates and paths).
        trailing_newline: End the file with a newline (the benchmark result files, written
            before this helper existed, have none).

    Raises:
        TypeError, ValueError: `document` cannot be serialised; nothing is written.
    """
    text = json.dumps(document, indent=2, default=default)
    atomic_write_text(path, text + "\n" if trailing_newline else text)


def swap_directory(new: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Put the complete directory `new` in place of `target` (a sibling on one filesystem).

    A directory with content cannot be replaced in one rename, so the old one is renamed
    aside first: readers see the old directory or the complete new one (or, for the instant
    between the two renames, none), never a half-written one. The old copy is then removed.
    """
    new_path, target_path = Path(new), Path(target)
    old: Path | None = None
    if target_path.exists():
        old = target_path.with_name(f".{target_path.name}.old-{uuid.uuid4().hex}")
        os.replace(target_path, old)
    os.replace(new_path, target_path)
    _fsync_dir(target_path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def replace_directory(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Make `target` a complete copy of the directory `source`; see `swap_directory`.

    Raises:
        FileNotFoundError: `source` is not a directory; `target` is untouched.
        Whatever the copy raises; `target` is then untouched and no temporary is left.
    """
    src, dest = Path(source), Path(target)
    if not src.is_dir():
        raise FileNotFoundError(f"not a directory: {src}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; artifacts are read by other users
        swap_directory(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Best effort: the file is already in place, and not every platform or filesystem lets
    # a directory be opened or synced.
    with contextlib.suppress(OSError):
        _fsync(path)
