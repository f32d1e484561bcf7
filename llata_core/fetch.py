"""Where a benchmark's bytes come from: mirror, cache, the bundled copy or its URL.

`fetch_benchmark_bytes` is the one verified fetch: training (`llata_core.data.load_series`)
and the pipeline's raw-data pull (`flows.datasource`) both go through it, so no copy whose
SHA-256 differs from the published one ever feeds a model.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Literal

from llata_core.atomic import atomic_write_bytes
from llata_core.catalog import BENCHMARKS, MIRROR_ENV
from llata_core.errors import DataError
from llata_core.tables import read_maybe_gzip, sha256_bytes

log = logging.getLogger(__name__)

CACHE_ENV = "LLATA_HOME"


def llata_home() -> Path:
    """Root of LLaTA's local caches (`$LLATA_HOME`, default `~/.cache/llata`)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "llata"))


FetchSource = Literal["mirror", "cache", "bundled", "url"]
# Offline sources first; the network only when none of them holds verified bytes.
FETCH_ORDER: tuple[FetchSource, ...] = ("mirror", "cache", "bundled", "url")


def bundled_path(name: str) -> Path | None:
    """The copy of a benchmark shipped inside the package (ETTh1 only), if there is one.

    The embedded default (the scikit-learn bundled-dataset convention) lets the main job run
    on real data on a machine with no network and no mirror; its source and licence are in
    `llata_core/datasets/README.md`.
    """
    bench = BENCHMARKS.get(name)
    if bench is None or not bench.bundled:
        return None
    path = Path(__file__).resolve().parent / "datasets" / (bench.filename + ".gz")
    return path if path.is_file() else None


def fetch_benchmark_bytes(
    name: str,
    *,
    order: tuple[FetchSource, ...] = FETCH_ORDER,
    timeout: float = 20.0,
    tried: list[str] | None = None,
) -> tuple[bytes, FetchSource, str]:
    """Find a benchmark's verified bytes in the first source of `order` that has them.

    Sources: `mirror` (`$LLATA_DATA_MIRROR`, gzipped or not), `cache` (`$LLATA_HOME/data`),
    `bundled` (the package's embedded copy, ETTh1 only) and `url` (the public location; a
    download is kept in the cache). Every candidate is checked against the published
    SHA-256; a mismatch is skipped with a warning (a corrupt copy must not silently feed
    training).

    Args:
        name: a key of `BENCHMARKS`.
        order: which sources to try, in order (the pipeline tries the URL before the mirror).
        timeout: seconds to wait for the URL.
        tried: when given, one line per source that failed is appended to it.

    Returns:
        The uncompressed CSV bytes, the kind of source and its location.

    Raises:
        DataError: no source had bytes with the right checksum.
    """
    bench = BENCHMARKS[name]
    tried = [] if tried is None else tried
    cached = llata_home() / "data" / bench.filename

    def verified(data: bytes, where: str) -> bool:
        if sha256_bytes(data) == bench.sha256:
            return True
        log.warning("%s has the wrong SHA-256 for %s; ignoring it", where, name)
        tried.append(f"{where} (checksum mismatch)")
        return False

    def from_files(kind: FetchSource, paths: list[Path]) -> tuple[bytes, str] | None:
        for path in paths:
            if not path.is_file():
                continue
            try:
                data = read_maybe_gzip(path)
            except (OSError, EOFError) as err:
                tried.append(f"{path} (unreadable: {err})")
                continue
            if verified(data, str(path)):
                return data, str(path)
        return None

    for kind in order:
        found: tuple[bytes, str] | None = None
        if kind == "mirror":
            mirror = os.environ.get(MIRROR_ENV)
            if not mirror:
                tried.append(f"mirror (${MIRROR_ENV} not set)")
                continue
            found = from_files(
                kind, [Path(mirror) / (bench.filename + ".gz"), Path(mirror) / bench.filename]
            )
            if found is None:
                tried.append(f"mirror {mirror} (no verified {bench.filename})")
        elif kind == "cache":
            found = from_files(kind, [cached])
        elif kind == "bundled":
            bundled = bundled_path(name)
            found = from_files(kind, [bundled]) if bundled is not None else None
        else:
            try:
                with urllib.request.urlopen(bench.url, timeout=timeout) as resp:  # noqa: S310
                    data = resp.read()
            except (urllib.error.URLError, OSError, TimeoutError) as err:
                tried.append(f"{bench.url} ({err})")
            else:
                if verified(data, bench.url):
                    atomic_write_bytes(cached, data)
                    found = data, bench.url
        if found is not None:
            return found[0], kind, found[1]
    raise DataError(f"benchmark {name} not available; tried: " + "; ".join(tried or ["nothing"]))
