"""The model watcher: follows the registry's production alias and hot-swaps the served model.

Each worker process runs one watcher. It loads the production version while the worker
starts, polls the alias (one small file read), and loads, verifies and warms up a new
version before it replaces the served one. Readiness is the watcher's: a worker is ready once
its watcher serves a model, and a worker that has not polled since a promotion checks the
registry when a request reaches it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import bentoml
import numpy as np

from llata_core.forecaster import Forecaster
from serving.bodies import IntervalCalibration, ModelInfo, RequestError
from serving.contract import ModelShape
from serving.registry import Registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A loaded, verified and warmed-up model version."""

    forecaster: Forecaster
    tag: str
    version: str
    registry_metadata: dict[str, Any]
    loaded_at: str

    def info(self) -> ModelInfo:
        """The ``GET /model`` view of this version."""
        meta = self.forecaster.metadata
        described = self.forecaster.describe()
        scalar_metrics = {
            k: v for k, v in self.forecaster.metrics.items() if isinstance(v, int | float | str)
        }
        calibration = described["intervals"]  # None: not calibrated
        return ModelInfo(
            model_version=self.version,
            tag=self.tag,
            kind=str(described["kind"]),
            members=described.get("members"),
            backbone=described["backbone"],
            n_layers=described["n_layers"],
            precision=self.forecaster.precision,
            input_size=self.forecaster.input_size,
            horizon=self.forecaster.horizon,
            channels=list(self.forecaster.channels),
            metrics=scalar_metrics,
            data_sha256=_opt_str(meta.get("data_sha256")),
            trained_at=_opt_str(meta.get("trained_at")),
            registered_at=_opt_str(self.registry_metadata.get("registered_at")),
            git_revision=_opt_str(meta.get("git_revision")),
            intervals=IntervalCalibration.model_validate(calibration) if calibration else None,
            loaded_at=self.loaded_at,
        )

    def shape(self) -> ModelShape:
        """What this version needs of a window (for the OpenAPI document)."""
        fc = self.forecaster
        calibrated = fc.intervals.horizon if fc.intervals is not None else None
        return ModelShape(self.version, fc.input_size, tuple(fc.channels), calibrated)

    def interval_levels(
        self, levels: Sequence[float] | None, horizon: int
    ) -> tuple[float, ...] | None:
        """The levels a request asks of this version, checked before its window joins a batch:
        a request this version cannot answer is refused alone, not with its batch-mates.

        Raises:
            RequestError: 422, the version has no calibrated intervals, the horizon is beyond
                the calibrated one, or a level needs more calibration windows than it has.
        """
        if levels is None:
            return None
        scores = self.forecaster.intervals
        if scores is None:
            raise RequestError(422, uncalibrated_message(self.version))
        if horizon > scores.horizon:
            raise RequestError(
                422,
                f"the intervals of model {self.version} are calibrated for {scores.horizon} "
                f"steps (its trained horizon); horizon {horizon} would be rolled out "
                "recursively, where no width is calibrated. Ask for at most "
                f"{scores.horizon} steps with levels, or for no levels",
            )
        try:
            return scores.check_levels(levels)
        except ValueError as exc:  # too few calibration windows for a level
            raise RequestError(422, f"model {self.version}: {exc}") from exc


def uncalibrated_message(version: str) -> str:
    """Why a version without calibrated intervals cannot answer levels, and what to do."""
    return (
        f"model {version} has no calibrated prediction intervals, so it cannot answer levels; "
        "calibrate its artifact with `llata calibrate --model DIR`, then register and promote "
        "it (ask without levels meanwhile)"
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass
class _Failure:
    attempts: int
    retry_at: float


@dataclass(frozen=True)
class _Slots:
    """What is served now, and the version it replaced (for requests already in flight)."""

    current: ServedModel | None = None
    retired: ServedModel | None = None


class ModelWatcher:
    """Follows the registry's production alias and swaps the served model atomically.

    A background thread polls ``Registry.production_tag()`` (one small file read). When the
    tag changes, the version is loaded and verified (checksums, weights, one warm-up forecast)
    *before* it replaces the served one, in a single reference assignment, so a request sees
    either the old or the new model, never a half-loaded one. The replaced version stays
    reachable as ``retired`` until the next swap, so requests validated against it finish on
    it.

    A version that fails to load is refused and the old model keeps serving. The same tag is
    tried again after a back-off that starts at one poll and doubles up to
    ``max_retry_seconds``: a version read while it was still being written (a store synced
    from elsewhere, a copy in progress) is served a poll later, and a broken one is not
    reloaded in a tight loop.

    Args:
        registry: Where the production alias lives.
        poll_seconds: Seconds between polls, and the first back-off after a failed load.
        max_retry_seconds: Longest back-off between two loads of a version that failed.
        precision: The dtype the weights are held in (``Forecaster.load``).
    """

    def __init__(
        self,
        registry: Registry,
        *,
        poll_seconds: float,
        max_retry_seconds: float,
        precision: str,
    ) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.max_retry_seconds = max_retry_seconds
        self.precision = precision
        self._slots = _Slots()
        self._failures: dict[str, _Failure] = {}
        self._reason = "no production model yet: the registry's production alias is not set"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()
        self._alias_error = ""

    @property
    def current(self) -> ServedModel | None:
        return self._slots.current

    @property
    def unavailable_reason(self) -> str:
        """Why nothing is served (meaningful while ``current`` is None)."""
        return self._reason

    def for_version(self, version: str | None) -> ServedModel | None:
        """The served model a request was validated against, else the current one."""
        slots = self._slots
        for served in (slots.current, slots.retired):
            if served is not None and served.version == version:
                return served
        return slots.current

    def start(self) -> None:
        """Loads production now (so the first request finds it) and starts polling."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="llata-model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serving(self, *, wait_seconds: float) -> ServedModel | None:
        """The served model; while there is none, the registry is asked now, not at the next poll.

        Each worker process polls on its own, so right after the first promotion one worker
        may serve while another has not polled yet. A request reaching the one that has not
        checks the alias itself, or waits up to ``wait_seconds`` for the load already under
        way (a readiness probe passes 0: it does not wait).
        """
        served = self.current
        if served is not None:
            return served
        if wait_seconds > 0:
            acquired = self._refresh_lock.acquire(timeout=wait_seconds)
        else:
            acquired = self._refresh_lock.acquire(blocking=False)
        if acquired:
            try:
                self._refresh_locked()
            finally:
                self._refresh_lock.release()
        return self.current

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any surprise
                logger.exception("model watcher: unexpected error; still serving the old model")

    def refresh(self) -> None:
        """One poll: load and swap in the production version if it changed."""
        with self._refresh_lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        try:
            tag = self.registry.production_tag()
        except Exception as exc:  # a corrupt or unreadable aliases file
            if str(exc) != self._alias_error:  # once per distinct error, not every poll
                logger.error("cannot read the production alias: %s", exc)
                self._alias_error = str(exc)
            if self.current is None:
                self._reason = f"cannot read the registry's production alias: {exc}"
            return
        self._alias_error = ""
        current = self.current
        if tag is None or (current is not None and current.tag == tag):
            return
        failure = self._failures.get(tag)
        if failure is not None and time.monotonic() < failure.retry_at:
            return
        if current is None:
            self._reason = f"production version {tag} is loading; retry in a few seconds"
        try:
            served = self._load(tag)
        except Exception as exc:
            attempts = failure.attempts + 1 if failure else 1
            delay = min(self.poll_seconds * 2 ** (attempts - 1), self.max_retry_seconds)
            self._failures[tag] = _Failure(attempts, time.monotonic() + delay)
            _SWAPS.labels(outcome="refused").inc()
            logger.error(
                "refused production version %s (attempt %d, next try in %.1f s): %s; %s",
                tag,
                attempts,
                delay,
                exc,
                f"still serving {current.tag}" if current else "nothing served",
            )
            if current is None:
                self._reason = (
                    f"production version {tag} failed to load ({exc}); retrying in {delay:.1f} s"
                )
            return
        self._failures.pop(tag, None)
        self._slots = _Slots(current=served, retired=current)
        _SWAPS.labels(outcome="loaded").inc()
        _SERVING.labels(version=served.version).set(1)
        if current is not None:
            _SERVING.labels(version=current.version).set(0)
        logger.info("now serving %s (was %s)", served.tag, current.tag if current else "nothing")

    def _load(self, tag: str) -> ServedModel:
        info = self.registry.get(tag)
        # Verifies checksums.
        forecaster = Forecaster.load(info.path, precision=self.precision)
        # One forecast before the swap: a model that loads but cannot run is refused here,
        # not by the first request.
        probe = np.random.default_rng(0).normal(size=(1, forecaster.input_size, 1))
        history = forecaster.scaler.inverse(
            np.broadcast_to(probe, (1, forecaster.input_size, len(forecaster.channels)))
        )
        out = forecaster.predict_batch(history)
        if out.shape != (1, forecaster.horizon, len(forecaster.channels)):
            raise ValueError(f"warm-up forecast has shape {out.shape}")
        if not np.isfinite(out).all():
            raise ValueError("warm-up forecast is not finite")
        return ServedModel(
            forecaster=forecaster,
            tag=info.tag,
            version=info.version,
            registry_metadata=dict(info.metadata),
            loaded_at=datetime.now(UTC).isoformat(),
        )


_SWAPS = bentoml.metrics.Counter(
    name="llata_model_swaps",
    documentation="Production versions loaded or refused by the hot-swap watcher",
    labelnames=["outcome"],
)
# One sample per worker process, summed over the live ones: how many workers serve each
# version (a promotion has reached every worker when it equals LLATA_WORKERS).
_SERVING = bentoml.metrics.Gauge(
    name="llata_model_serving",
    documentation="Worker processes serving each model version",
    labelnames=["version"],
    multiprocess_mode="livesum",
)
