"""Filling `data/raw/` on a fresh machine: DVC remote, canonical URL, mirror, bundled copy.

`data.dvc` pins the raw folder by content hash. `pull_raw_data` tries the sources in the
order a production checkout should: the configured DVC remote (the versioned copy), the
dataset's canonical public URL, the local mirror (`$LLATA_DATA_MIRROR`), then the copy
that ships inside the package (ETTh1, the embedded default). Every copy is checked against
the published SHA-256 before it is written, and written atomically. When the bytes match,
the folder is committed to the local DVC cache so that `dvc status` reports `data.dvc`
unchanged. Generated data is written only when asked (`allow_synthetic`) and no source
answers, with a loud warning and a provenance record that the features stage carries into
the model's metadata (`synthetic_data: true`), which promotion then refuses to put over a
model trained on real data. An M4 subset is read from the mirror's competition files, and
the chosen series are written as one long table (`m4_long_frame`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from flows.config import PipelineConfig
from llata_core.atomic import atomic_write_bytes, write_json
from llata_core.data import (
    BENCHMARKS,
    DataError,
    FetchSource,
    fetch_benchmark_bytes,
    file_sha256,
    synthetic_frame,
)
from llata_core.shortterm.series import m4_long_frame, m4_mirror_paths, read_m4, select_series

logger = logging.getLogger(__name__)

# What a pull reports: the file was there, the DVC remote, generated data, or the kind of
# source `fetch_benchmark_bytes` read it from (one of `PULL_ORDER`).
PullSource = Literal["present", "remote", "synthetic"] | FetchSource
# After the DVC remote (the versioned copy): the canonical URL, the mirror, then the copy
# shipped in the package (ETTh1), each verified by `fetch_benchmark_bytes`.
PULL_ORDER: tuple[FetchSource, ...] = ("url", "mirror", "bundled")
URL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PullResult:
    """Where the raw data came from.

    Attributes:
        source: `present` (already there, untouched), `remote`, `url`, `mirror`,
            `bundled` or `synthetic`.
        origin: The remote, URL or file it was read from.
        path: The raw file.
        sha256: SHA-256 of the raw file's bytes.
        dvc_unchanged: Whether `dvc status data.dvc` reports no change afterwards (None when
            the project is not a DVC repository).
        tried: One line per source that failed, for the log and the error message.
    """

    source: PullSource
    origin: str
    path: Path
    sha256: str
    dvc_unchanged: bool | None
    tried: tuple[str, ...] = ()

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"


def read_provenance(cfg: PipelineConfig) -> dict[str, object] | None:
    """The provenance record `pull_raw_data` wrote, if it still describes the raw file."""
    path = cfg.layout.provenance
    if not path.is_file() or not cfg.layout.raw_data.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        logger.warning("ignoring unreadable %s", path)
        return None
    if record.get("sha256") != file_sha256(cfg.layout.raw_data):
        return None  # the raw file changed since it was pulled
    return record


def pull_raw_data(
    cfg: PipelineConfig, *, force: bool = False, allow_synthetic: bool = False
) -> PullResult:
    """Make sure the raw file exists, fetching it from the first source that answers.

    Args:
        cfg: The pipeline configuration.
        force: Fetch even when the raw file exists (it is replaced only by verified bytes,
            never by synthetic data).
        allow_synthetic: Write the synthetic series when no source answers and there is no
            raw file; otherwise fail. Off by default: a model trained on generated data
            must be asked for (`--allow-synthetic`).

    Returns:
        Where the data came from.

    Raises:
        DataError: No source answered and synthetic data was not allowed (or a forced
            refresh found nothing).
    """
    layout = cfg.layout
    target = layout.raw_data
    if cfg.params.m4_subset is not None:
        return _pull_m4(cfg, force=force)
    if target.is_file() and not force:
        record = read_provenance(cfg)
        synthetic = record is not None and record.get("source") == "synthetic"
        if synthetic:
            logger.warning("!!! %s holds SYNTHETIC data from an earlier pull !!!", target)
        return PullResult(
            "synthetic" if synthetic else "present",
            str(record.get("origin", target)) if record else str(target),
            target,
            file_sha256(target),
            _dvc_unchanged(cfg),
        )

    tried: list[str] = []
    origin: str | None = None
    source: PullSource = "remote"
    if _dvc_remote_pull(cfg, tried) and target.is_file():
        origin = "dvc remote"
    if origin is None and cfg.params.dataset in BENCHMARKS:
        try:
            data, source, origin = fetch_benchmark_bytes(
                cfg.params.dataset, order=PULL_ORDER, timeout=URL_TIMEOUT_S, tried=tried
            )
        except DataError:
            origin = None
        else:
            atomic_write_bytes(target, data)
    if origin is None:
        if not allow_synthetic or target.is_file():
            # A forced refresh that reaches nothing keeps the file it has.
            kept = f"; kept the existing {target}" if target.is_file() else ""
            raise DataError(
                f"{cfg.params.dataset} is not available for {target}; tried: "
                + "; ".join(tried)
                + kept
            )
        logger.warning(
            "!!! No source of %s is reachable (%s). Writing SYNTHETIC data to %s: models "
            "trained on it are marked synthetic_data=true and their metrics mean nothing. !!!",
            cfg.params.dataset,
            "; ".join(tried),
            target,
        )
        bench = BENCHMARKS.get(cfg.params.dataset)
        freq = bench.freq if bench is not None else "h"
        n_rows = 17420 if cfg.params.split != "ett_minute" else 69680  # ETT's own lengths
        # Named like the real data's channels, so the same suite and model apply.
        names = cfg.model.data.channels or cfg.params.validation.channels
        frame = synthetic_frame(n_rows, n_channels=len(names) if names else 7, freq=freq)
        columns = {"date": cfg.model.data.timestamp_column}
        if names:
            columns.update({f"ch{i}": name for i, name in enumerate(names)})
        frame = frame.rename(columns=columns)
        atomic_write_bytes(target, frame.to_csv(index=False).encode())
        origin, source = "llata_core.data.synthetic_frame(seed=0)", "synthetic"
    digest = file_sha256(target)
    if source != "synthetic":
        _dvc_commit_if_matching(cfg)
    _write_provenance(cfg, source, origin, digest)
    result = PullResult(source, origin, target, digest, _dvc_unchanged(cfg), tuple(tried))
    logger.info("%s: from %s (%s), sha256 %s", target, source, origin, digest[:12])
    return result


def _pull_m4(cfg: PipelineConfig, *, force: bool) -> PullResult:
    """The raw file of an M4 dataset: the chosen series of the subset's mirror files, in
    long format (`m4_long_frame`), rewritten when the selection changed.

    Raises:
        DataError: the mirror lacks the subset's files, or the selection names series the
            subset does not hold.
    """
    subset = cfg.params.m4_subset
    assert subset is not None
    target = cfg.layout.raw_data
    selection = cfg.params.series_selection.describe()
    record = read_provenance(cfg)
    if (
        not force
        and record is not None
        and record.get("dataset") == cfg.params.dataset
        and record.get("series_selection") == selection
    ):
        return PullResult("present", str(record["origin"]), target, str(record["sha256"]), None)
    train_path, test_path = m4_mirror_paths(subset.frequency_name)
    dataset = read_m4(train_path, test_path, subset.frequency_name)
    chosen = cfg.params.series_selection
    if chosen.count is not None or chosen.ids is not None:
        dataset = select_series(dataset, ids=chosen.ids, count=chosen.count)
    data = cfg.model.data
    assert data.series_column is not None  # set by load_pipeline_config for M4
    frame = m4_long_frame(dataset, data.series_column, data.timestamp_column, data.value_column)
    atomic_write_bytes(target, frame.to_csv(index=False).encode())
    origin = f"{train_path},{test_path}"
    digest = file_sha256(target)
    _write_provenance(cfg, "mirror", origin, digest, series_selection=selection)
    logger.info(
        "%s: %d series of M4 %s from the mirror (%s), sha256 %s",
        target,
        len(dataset),
        subset.frequency_name,
        selection,
        digest[:12],
    )
    return PullResult("mirror", origin, target, digest, None)


# --------------------------------------------------------------------------- sources


def _dvc(cfg: PipelineConfig, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """Run the DVC command line (the ordinary client) in the project root."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cfg.root,
        capture_output=True,
        text=True,
        check=check,
        env=env,
    )


def _is_dvc_project(cfg: PipelineConfig) -> bool:
    return (cfg.root / ".dvc").is_dir() and cfg.layout.dvc_file.is_file()


def _dvc_remote_pull(cfg: PipelineConfig, tried: list[str]) -> bool:
    """`dvc pull data.dvc` when the project configures a remote; False when there is none."""
    if not _is_dvc_project(cfg):
        tried.append("dvc remote (not a DVC project)")
        return False
    remotes = _dvc(cfg, "remote", "list")
    if remotes.returncode != 0 or not remotes.stdout.strip():
        tried.append("dvc remote (none configured)")
        return False
    pulled = _dvc(cfg, "pull", cfg.layout.dvc_file.name)
    if pulled.returncode != 0:
        reason = (pulled.stderr.strip().splitlines() or ["failed"])[-1]
        tried.append(f"dvc remote ({reason})")
        return False
    return True


def _write_provenance(
    cfg: PipelineConfig, source: str, origin: str, sha256: str, **extra: object
) -> None:
    record = {
        "dataset": cfg.params.dataset,
        "path": str(cfg.params.raw_data),
        "source": source,
        "origin": origin,
        "sha256": sha256,
        "pulled_at": datetime.now(UTC).isoformat(),
        **extra,
    }
    write_json(cfg.layout.provenance, record)


# --------------------------------------------------------------------------- DVC state


def _dvc_status(cfg: PipelineConfig) -> dict | None:
    if not _is_dvc_project(cfg):
        return None
    status = _dvc(cfg, "status", "--json", cfg.layout.dvc_file.name)
    if status.returncode != 0:
        logger.warning("dvc status failed: %s", status.stderr.strip())
        return None
    try:
        return json.loads(status.stdout or "{}")
    except json.JSONDecodeError:
        return None


def _dvc_unchanged(cfg: PipelineConfig) -> bool | None:
    status = _dvc_status(cfg)
    return None if status is None else not status


def _dvc_commit_if_matching(cfg: PipelineConfig) -> None:
    """Put freshly fetched bytes into the DVC cache, but only if data.dvc already names them.

    A fetched file is absent from `.dvc/cache`, which `dvc status` reports as "not in
    cache". `dvc commit` fixes that; run on different bytes it would rewrite data.dvc, so
    it runs only when the cache is the sole difference.
    """
    status = _dvc_status(cfg)
    if not status:
        return
    changes = [
        change
        for entries in status.values()
        for entry in entries
        if isinstance(entry, dict)
        for change in entry.get("changed outs", {}).values()
    ]
    if changes and all(change == "not in cache" for change in changes):
        _dvc(cfg, "commit", "--force", cfg.layout.dvc_file.name, check=True)
    else:
        logger.warning("data.dvc does not match %s: %s", cfg.layout.raw_data, status)
