"""The registry's mutable state: the ``production``/``previous`` aliases and their history.

Which version is ``production`` and which is ``previous`` lives in ``aliases.json`` next to
an append-only ``history.jsonl`` in the registry directory. ``aliases.json`` is only ever
replaced whole (temp file in the same directory, fsync, ``os.replace``), so lock-free readers
such as the serving process see the old or the new file, never a partial one. Changes are
made under one ``filelock.FileLock``; the aliases are written first, then the history line,
and the aliases file carries a ``revision`` counter that history lines repeat.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from llata_core.atomic import write_json
from serving.registry_store import RegistryError

PRODUCTION = "production"
PREVIOUS = "previous"
ALIAS_NAMES = (PRODUCTION, PREVIOUS)

ALIASES_FILE = "aliases.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = "registry.lock"


@dataclass(frozen=True)
class Aliases:
    """The tags ``production`` and ``previous`` point at, and the file's revision."""

    production: str | None = None
    previous: str | None = None
    revision: int = 0

    def names_for(self, tag: str) -> tuple[str, ...]:
        """The alias names pointing at ``tag``."""
        return tuple(name for name in ALIAS_NAMES if getattr(self, name) == tag)


class RegistryState:
    """``aliases.json``, ``history.jsonl`` and the lock that orders their changes.

    Args:
        model_name: The one model name this directory belongs to.
        registry_dir: Where the three files live (created if missing).
        lock_timeout: Seconds to wait for the lock before ``filelock.Timeout``.
    """

    def __init__(self, model_name: str, registry_dir: Path, lock_timeout: float) -> None:
        self.model_name = model_name
        self.registry_dir = registry_dir
        self.registry_dir.mkdir(parents=True, exist_ok=True)
        self.aliases_path = registry_dir / ALIASES_FILE
        self.history_path = registry_dir / HISTORY_FILE
        self.lock_path = registry_dir / LOCK_FILE
        self.lock_timeout = lock_timeout

    def lock(self) -> filelock.BaseFileLock:
        """The registry lock, to hold around every read-compare-write of the aliases."""
        # A fresh lock object per operation: flock on separate descriptors excludes threads
        # of this process as well as other processes.
        return filelock.FileLock(self.lock_path, timeout=self.lock_timeout)

    def read_aliases(self) -> Aliases:
        """The aliases as they are now (no lock needed: the file is replaced whole).

        Raises:
            RegistryError: The file is corrupt or belongs to another model name.
        """
        try:
            raw = self.aliases_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Aliases()
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:  # cannot happen through this class: os.replace
            raise RegistryError(f"{self.aliases_path} is corrupt: {exc}") from exc
        if data.get("model_name") != self.model_name:
            raise RegistryError(
                f"{self.registry_dir} holds aliases of {data.get('model_name')!r}, not "
                f"{self.model_name!r}; give each model name its own registry_dir"
            )
        return Aliases(
            production=data.get(PRODUCTION),
            previous=data.get(PREVIOUS),
            revision=int(data.get("revision", 0)),
        )

    def write_aliases(self, aliases: Aliases) -> None:
        """Replaces aliases.json atomically; the caller holds the lock."""
        payload = {
            "model_name": self.model_name,
            PRODUCTION: aliases.production,
            PREVIOUS: aliases.previous,
            "revision": aliases.revision,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        write_json(self.aliases_path, payload)  # 0644: the server may be another user

    def append_history(
        self,
        *,
        action: str,
        candidate: str,
        before: Aliases,
        after: Aliases,
        reason: str,
        **extra: Any,
    ) -> None:
        """Appends one history line; the caller holds the lock."""
        entry = {
            "time": datetime.now(UTC).isoformat(),
            "action": action,
            "candidate": candidate,
            "production_before": before.production,
            "previous_before": before.previous,
            "production_after": after.production,
            "previous_after": after.previous,
            "revision": after.revision,
            "reason": reason,
            **extra,
        }
        with self.history_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def history(self) -> list[dict[str, Any]]:
        """Every promotion, rejection and rollback, oldest first."""
        with self.lock():
            if not self.history_path.exists():
                return []
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
