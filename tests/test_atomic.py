"""Atomic file writes: the old file survives any failure, and no temporary file is left."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from llata_core.atomic import atomic_write, atomic_write_bytes, atomic_write_text, write_json


def test_writes_create_parent_directories(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "doc.json"
    write_json(target, {"x": [1, 2]})
    assert target.read_text(encoding="utf-8") == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's private 0600

    atomic_write_bytes(tmp_path / "c" / "raw.bin", b"\x00\x01")
    assert (tmp_path / "c" / "raw.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "d" / "note.txt", "héllo")
    assert (tmp_path / "d" / "note.txt").read_text(encoding="utf-8") == "héllo"


def test_json_formats(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    write_json(target, {"when": Path("/x")}, default=str, trailing_newline=False)
    assert target.read_text(encoding="utf-8") == '{\n  "when": "/x"\n}'
    write_json(target, {"a": 1})  # replaces the existing file
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": 1}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_failed_writes_keep_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    write_json(target, {"version": 1})
    before = target.read_bytes()

    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(target, {"version": 2, "bad": object()})
    assert target.read_bytes() == before

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text('{"version": 2, "trunc', encoding="utf-8")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == before

    with pytest.raises(KeyboardInterrupt):  # an interrupt mid-write too
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert target.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_temporary_name(tmp_path: Path) -> None:
    seen: list[str] = []
    atomic_write(tmp_path / "plot.png", lambda tmp: seen.append(tmp.name) or tmp.touch())
    atomic_write(
        tmp_path / "plot.png", lambda tmp: seen.append(tmp.name) or tmp.touch(), keep_suffix=True
    )
    # Hidden, beside the target; `.tmp` unless the writer needs the real suffix.
    assert seen[0].startswith(".plot.png.") and seen[0].endswith(".tmp")
    assert seen[1].startswith(".plot.png.") and seen[1].endswith(".tmp.png")
    assert _leftovers(tmp_path) == []
