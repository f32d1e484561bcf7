"""The LLaTA forecasting service: ``bentoml serve serving.service:Forecaster``.

Serves the registry's ``production`` model version (the student branch alone, LoRA merged,
under ``torch.inference_mode``) and follows promotions without a restart.

Endpoints:
    POST /forecast         ``{"history": [[...], ...], "timestamps": [...]?, "horizon": int?,
                           "levels": [80, 95]?}`` -> ``{"forecast", "channels", "horizon",
                           "timestamps"?, "intervals"?, "model_version"}``. ``history`` is
                           ``steps x channels`` in the data's own units, at least
                           ``input_size`` steps (longer is cut to the last ``input_size``).
                           With ``timestamps`` (one per history row, evenly spaced) the answer
                           carries the forecast's timestamps; with ``levels`` (percent) it
                           carries one conformal interval per level (``{"level", "lower",
                           "upper"}``, bounds shaped like the forecast, data units).
    POST /forecast_series  ``{"series_id": "...", "horizon": int?, "levels": [...]?}``:
                           forecasts the series' context window read from the Feast online
                           store.
    GET  /model            the production version, metrics, data hash, trained-at, backbone,
                           and how its intervals were calibrated (null: none).
    GET  /livez, /readyz, /metrics   BentoML's health probes and Prometheus metrics.
    GET  /docs.json        the OpenAPI document (``serving/contract.py``): every limit, every
                           status each endpoint answers and its error body.

Readiness is per worker process: each loads the production version while it starts, before it
accepts a connection, and polls the registry on its own. /readyz answers for the worker it
reaches: 200 once that one serves a model. After the first promotion, a worker that has not
polled yet checks the registry when a request (or /readyz) reaches it, and a request waits for
a load already under way, so no request is refused once any worker is ready. Every worker
reports the version it serves in ``llata_model_serving{version}`` on /metrics.

Both forecast endpoints go through BentoML's adaptive-batching dispatcher (``CorkDispatcher``,
the one behind ``@bentoml.api(batchable=True)``), run in process: concurrent windows are
stacked into one ``[B, L, M]`` model call per served version, rollout depth and interval
levels (the bounds come out of the same call: point +- a stored quantile). (A batchable
BentoML API only takes a list-shaped body, so ``/forecast``'s one-window body would need an
extra in-process HTTP hop to reach one; measured on this project's 2-core machine, that hop
halved the throughput - see benchmarks/serving/RESULTS.md.)

Errors answer JSON ``{"error": "..."}`` (schema errors add a ``"detail"`` list): 400 the body
breaks the published schema (bad JSON, wrong types, NaN/inf, ragged rows, limits), 401 token,
404 unknown series, 405 a method the path does not serve, 409 feature store window
incompatible with the model, 413 body too large, 415 not JSON, 422 a schema-valid body the
model cannot forecast (channels, too short, timestamps not one per row or uneven, non-finite
forecast, levels asked of a model without calibrated intervals or beyond its calibrated
horizon), 501 no feature store configured, 503 no production model (with the reason) or
overloaded.

Configuration (environment variables, read once per worker, ``serving/settings.py``):
    BENTOML_HOME              BentoML home holding the model store (default ``~/bentoml``).
    LLATA_MODEL_NAME          registry model name (default ``llata-forecaster``).
    LLATA_REGISTRY_DIR        aliases/history directory (default
                              ``$BENTOML_HOME/llata_registry``).
    LLATA_FEATURE_REPO        Feast repo directory for ``/forecast_series`` (optional; Feast is
                              imported only when this is set).
    LLATA_API_TOKEN           bearer token required on every endpoint except /livez, /readyz,
                              /healthz and /metrics (optional; unset means no auth).
    LLATA_MAX_REQUEST_BYTES   request body limit in bytes (default 1048576).
    LLATA_MAX_STEPS           most history rows accepted (default 10000).
    LLATA_MAX_CHANNELS        most channels accepted (default 512).
    LLATA_MAX_HORIZON         largest horizon accepted; beyond the trained horizon the model is
                              rolled out recursively (default 720).
    LLATA_POLL_SECONDS        how often the production alias is polled (default 2).
    LLATA_MAX_RETRY_SECONDS   a version that failed to load is tried again after one poll,
                              then after a back-off doubling up to this (default 600): a
                              version read half-written is served a poll later, a broken one
                              is not reloaded in a tight loop.
    LLATA_BATCHING            ``0`` turns adaptive batching off (benchmarks; default on).
    LLATA_MAX_BATCH_SIZE      adaptive batching: most windows per model call (default 64).
    LLATA_MAX_LATENCY_MS      adaptive batching: queueing deadline; BentoML answers 503 past it
                              (default 10000).
    LLATA_WORKERS             server worker processes, each with its own event loop, model
                              copy and registry watcher (default: usable cores, at most 4). On
                              the 2-core benchmark machine two workers served 309 windows/s
                              against 219 for one, at the same latency: one process's event
                              loop and model thread contend for its GIL.
    LLATA_TORCH_THREADS       torch intra-op threads per worker (default: usable cores /
                              workers; with one worker, usable cores - 1 so that its event loop
                              keeps a core; at least 1).
    LLATA_PRECISION           ``auto`` (default), ``bf16`` or ``fp32``: the dtype the model's
                              weights are held in. ``auto`` is bf16 on CPUs with AVX512-BF16 or
                              AMX (about 1.5x faster; test MSE of the benchmark ETTh1 model
                              0.38667 vs 0.38665 in fp32), fp32 elsewhere. GET /model says
                              which one is served.
    LLATA_LOG_LEVEL           level of this package's loggers (default INFO).

The server binds 127.0.0.1:3000 unless told otherwise: ``bentoml serve
serving.service:Forecaster --host 0.0.0.0 --port 8080`` exposes it (then set
LLATA_API_TOKEN). Set ``BENTOML_DO_NOT_TRACK=True`` to keep BentoML from posting usage
events.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher  # BentoML's adaptive batcher
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

with bentoml.importing():
    import anyio
    import pandas as pd
    import torch

    from llata_core.forecaster import Forecaster as LoadedForecaster
    from llata_core.forecaster import ForecastInputError, IntervalsUnavailableError
    from serving.contract import (
        OPEN_PATHS,
        ContractRoutes,
        ForecastRequest,
        ForecastResponse,
        IntervalCalibration,
        ModelInfo,
        ModelShape,
        PredictionInterval,
        SeriesForecastResponse,
        SeriesRequest,
        openapi_document,
    )
    from serving.registry import DEFAULT_MODEL_NAME, Registry
    from serving.settings import SETTINGS

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)
# BentoML's server logging config leaves the root logger at WARNING; swaps and refusals are
# INFO/ERROR events an operator needs to see, so this package's loggers get their own level.
logging.getLogger("serving").setLevel(os.environ.get("LLATA_LOG_LEVEL", "INFO").upper())

# --------------------------------------------------------------------------- hot swap


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A loaded, verified and warmed-up model version."""

    forecaster: LoadedForecaster
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
            backbone=str(described["backbone"]),
            n_layers=int(described["n_layers"]),
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
            raise RequestError(422, _uncalibrated(self.version))
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


def _uncalibrated(version: str) -> str:
    return (
        f"model {version} has no calibrated prediction intervals, so it cannot answer levels; "
        "calibrate its artifact with `llata calibrate --model DIR`, then register and promote "
        "it (ask without levels meanwhile)"
    )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, eq=False)
class _Window:
    """One window on its way to the model, already checked against `version`'s shape."""

    history: np.ndarray  # [input_size, M], data units
    horizon: int
    version: str
    levels: tuple[float, ...] | None = None  # checked against `version` (interval_levels)


@dataclass(frozen=True, eq=False)
class _Outcome:
    """A window's forecast (`[horizon, M]`, data units) with its bounds per level when asked
    (`[horizon, M]` each, in the order asked), or the status and error to answer."""

    forecast: np.ndarray | None = None
    lower: Mapping[float, np.ndarray] = field(default_factory=dict)
    upper: Mapping[float, np.ndarray] = field(default_factory=dict)
    model_version: str = ""
    status: int = 200
    error: str = ""


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
    """

    def __init__(self, registry: Registry, poll_seconds: float, max_retry_seconds: float) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.max_retry_seconds = max_retry_seconds
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
        forecaster = LoadedForecaster.load(info.path, precision=SETTINGS.precision)
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
_BATCH_WINDOWS = bentoml.metrics.Histogram(
    name="llata_batch_windows",
    documentation="Windows per model call (adaptive batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


# --------------------------------------------------------------------------- request guard


class RequestGuard:
    """ASGI middleware: bearer token, JSON-only bodies, body size limit.

    Runs before BentoML parses anything, so an oversized or unauthorised request is answered
    without reading it into the service. Health and metrics paths stay open.

    Args:
        app: The wrapped ASGI app.
        token: Required bearer token, or None for no authentication.
        max_body_bytes: Largest request body accepted.
    """

    def __init__(self, app: Any, *, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.token is not None:
            auth = headers.get(b"authorization")
            if auth is None:
                await _reply(
                    scope,
                    receive,
                    send,
                    401,
                    "missing bearer token (Authorization: Bearer <token>)",
                )
                return
            scheme, _, presented = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(presented, self.token):
                await _reply(scope, receive, send, 401, "invalid bearer token")
                return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            content_type = headers.get(b"content-type", b"application/json")
            media = content_type.split(b";")[0].strip().lower()
            if media != b"application/json":
                await _reply(
                    scope,
                    receive,
                    send,
                    415,
                    f"send JSON (Content-Type: application/json), not {media.decode('latin-1')}",
                )
                return
            declared = headers.get(b"content-length")
            if declared is not None and (
                not declared.isdigit() or int(declared) > self.max_body_bytes
            ):
                await _reply(
                    scope, receive, send, 413, self._too_large(declared.decode(errors="replace"))
                )
                return
            body = await self._read_body(receive)
            if body is None:
                await _reply(scope, receive, send, 413, self._too_large("more than that"))
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _too_large(self, size: str) -> str:
        return (
            f"request body of {size} bytes exceeds the limit of {self.max_body_bytes} bytes "
            "(LLATA_MAX_REQUEST_BYTES)"
        )

    async def _read_body(self, receive: Any) -> bytes | None:
        """The whole body, or None once it passes the limit (chunked uploads included)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _headers(scope: MutableMapping[str, Any]) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def _replay(body: bytes, receive: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A ``receive`` that hands the buffered body over once, then the client's own events."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # e.g. http.disconnect when the client goes away

    return replay


async def _reply(scope: Any, receive: Any, send: Any, status: int, message: str) -> None:
    await _error(status, message)(scope, receive, send)


def _as_lists(forecast: np.ndarray | None) -> list[list[float]]:
    return [] if forecast is None else forecast.tolist()


def _intervals(outcome: _Outcome) -> list[PredictionInterval] | None:
    """The answer's ``intervals``, one per level in the order asked; None without levels."""
    if not outcome.lower:
        return None
    return [
        PredictionInterval(level=level, lower=low.tolist(), upper=outcome.upper[level].tolist())
        for level, low in outcome.lower.items()
    ]


def _ok(body: BaseModel) -> Response:
    """A 200 JSON answer without null fields.

    BentoML 1.4.40's HTTP client (``bentoml.SyncHTTPClient``) decodes answers by schema and
    fails on ``null`` where the schema has an optional list, so absent fields are omitted.
    """
    return Response(body.model_dump_json(exclude_none=True), media_type="application/json")


def _error(status: int, message: str, *, retry_after: int | None = None) -> JSONResponse:
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="llata"'
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class RequestError(Exception):
    """A request that is well-formed JSON but cannot be forecast; carries its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- service

# GET routes: BentoML APIs are POST-only, so /model is a FastAPI route mounted beside them
# (BentoML binds `self`; serving/contract.py documents it).
model_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
_TRAFFIC_TIMEOUT_SECONDS = 60


@bentoml.asgi_app(model_app, path="/")
@bentoml.service(
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": _TRAFFIC_TIMEOUT_SECONDS},
    workers=SETTINGS.workers,
)
class Forecaster:
    """LLaTA forecaster: the registry's production model, hot-swapped on promotion."""

    def __init__(self) -> None:
        torch.set_num_threads(SETTINGS.torch_threads)
        registry = Registry(SETTINGS.model_name or DEFAULT_MODEL_NAME, SETTINGS.registry_dir)
        self.watcher = ModelWatcher(
            registry,
            poll_seconds=SETTINGS.poll_seconds,
            max_retry_seconds=SETTINGS.max_retry_seconds,
        )
        # BentoML creates the service in the worker's start-up, before the worker accepts a
        # connection: a production version that is set is loaded before the first request.
        self.watcher.start()
        # Feast reads go through one dedicated thread: its sqlite connection stays on the
        # thread that opened it, and a slow read never holds the event loop.
        self._feast_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llata-feast")
        self._store: FeatureStore | None = None
        self._store_problem: tuple[int, str] | None = None
        self._open_feature_store(SETTINGS.feature_repo)
        self._model_limiter: anyio.CapacityLimiter | None = None
        self._batched: Callable[[_Window], Awaitable[_Outcome]] | None = None
        logger.info(
            "worker up (%d in all): registry %s, batching %s (max %d windows, %d ms), auth %s, "
            "%s with %d torch threads",
            SETTINGS.workers,
            registry,
            "on" if SETTINGS.batching else "off",
            SETTINGS.max_batch_size,
            SETTINGS.max_latency_ms,
            "on" if SETTINGS.api_token else "off",
            SETTINGS.precision,
            torch.get_num_threads(),
        )

    def _open_feature_store(self, repo: Path | None) -> None:
        if repo is None:
            self._store_problem = (
                501,
                "no feature store configured: start the server with LLATA_FEATURE_REPO set",
            )
            return
        try:
            from features.store import open_feature_store  # imports feast (seconds)

            self._store = self._feast_pool.submit(open_feature_store, repo).result()
            logger.info("feature store %s opened", repo)
        except Exception as exc:  # serve /forecast even when the store is broken
            logger.exception("cannot open the feature store %s", repo)
            self._store_problem = (503, f"feature store {repo} cannot be opened: {exc}")

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.watcher.stop()
        self._feast_pool.shutdown(wait=False, cancel_futures=True)

    async def __is_ready__(self) -> bool:
        if self.watcher.current is not None:
            return True
        served = await anyio.to_thread.run_sync(lambda: self.watcher.serving(wait_seconds=0))
        return served is not None

    def openapi_document(self) -> dict[str, Any]:
        """This worker's OpenAPI document (served at /docs.json by ``ContractRoutes``)."""
        served = self.watcher.current
        return openapi_document(
            shape=served.shape() if served is not None else None,
            auth=SETTINGS.api_token is not None,
            feature_store=SETTINGS.feature_repo is not None,
        )

    async def _serving(self) -> ServedModel | None:
        # Half of BentoML's traffic timeout: a load that takes longer answers 503 (documented)
        # rather than BentoML's 504.
        wait = _TRAFFIC_TIMEOUT_SECONDS / 2
        return await anyio.to_thread.run_sync(lambda: self.watcher.serving(wait_seconds=wait))

    # ------------------------------------------------------------------ public endpoints

    @bentoml.api(route="/forecast", input_spec=ForecastRequest, output_spec=ForecastResponse)
    async def forecast(
        self,
        history: list[list[float]],
        timestamps: list[str] | None = None,
        horizon: int | None = None,
        levels: list[float] | None = None,
    ) -> Response:
        """Forecast one history window (steps x channels, data units)."""
        served = self.watcher.current or await self._serving()
        if served is None:
            return _error(503, self.watcher.unavailable_reason, retry_after=5)
        try:
            fc = served.forecaster
            window = _fit_window(history, fc.input_size, fc.channels)
            steps = horizon or fc.horizon
            checked = served.interval_levels(levels, steps)
            future = None
            if timestamps is not None:
                future = _future_timestamps(timestamps, len(history), steps)
            result = await self._infer(window, steps, served.version, checked)
        except RequestError as problem:
            return _error(problem.status, problem.message)
        return _ok(
            ForecastResponse(
                forecast=_as_lists(result.forecast),
                channels=list(fc.channels),
                horizon=steps,
                timestamps=future,
                intervals=_intervals(result),
                model_version=result.model_version,
            )
        )

    @bentoml.api(
        route="/forecast_series", input_spec=SeriesRequest, output_spec=SeriesForecastResponse
    )
    async def forecast_series(
        self, series_id: str, horizon: int | None = None, levels: list[float] | None = None
    ) -> Response:
        """Forecast a series from its context window in the Feast online store."""
        if self._store is None:  # a lasting configuration problem comes before a passing one
            status, message = self._store_problem or (503, "feature store unavailable")
            return _error(status, message)
        served = self.watcher.current or await self._serving()
        if served is None:
            return _error(503, self.watcher.unavailable_reason, retry_after=5)
        fc = served.forecaster
        steps = horizon or fc.horizon
        try:  # the caller's levels, checked before the store is read: a 422, not a 409
            checked = served.interval_levels(levels, steps)
        except RequestError as problem:
            return _error(problem.status, problem.message)
        from features.store import UnknownSeriesError, read_context_window

        loop = asyncio.get_running_loop()
        try:
            stored = await loop.run_in_executor(
                self._feast_pool, read_context_window, self._store, series_id
            )
        except UnknownSeriesError as exc:
            return _error(404, str(exc))
        except ValueError as exc:  # a stored window of the wrong length
            return _error(409, f"stored context window is unusable: {exc}")
        try:
            if set(stored.channels) != set(fc.channels):
                raise RequestError(
                    409,
                    f"the feature store's channels {list(stored.channels)} do not match the "
                    f"model's {list(fc.channels)}",
                )
            order = [stored.channels.index(c) for c in fc.channels]
            values = stored.values[:, order]  # [L, M] in the model's channel order
            window = _fit_window(values.tolist(), fc.input_size, fc.channels, where="stored")
            result = await self._infer(window, steps, served.version, checked)
        except RequestError as problem:
            # The window is the store's, not the caller's: one that does not fit is a conflict.
            return _error(409 if problem.status == 422 else problem.status, problem.message)
        return _ok(
            SeriesForecastResponse(
                forecast=_as_lists(result.forecast),
                channels=list(fc.channels),
                horizon=steps,
                intervals=_intervals(result),
                model_version=result.model_version,
                series_id=stored.series_id,
                window_end=stored.window_end.isoformat(),
            )
        )

    @model_app.get("/model", response_model=ModelInfo)
    async def model_info(self) -> ModelInfo | JSONResponse:
        """Describe the production model being served."""
        served = self.watcher.current or await self._serving()
        if served is None:
            return _error(503, self.watcher.unavailable_reason, retry_after=5)
        return served.info()

    # ------------------------------------------------------------------ batching

    async def _infer(
        self,
        window: list[list[float]],
        horizon: int,
        version: str,
        levels: tuple[float, ...] | None = None,
    ) -> _Outcome:
        """Forecast one window through the batcher; an error outcome becomes a RequestError."""
        item = _Window(np.asarray(window, dtype=np.float64), horizon, version, levels)
        outcome = await self._submit()(item)
        if outcome.error:
            raise RequestError(outcome.status, outcome.error)
        return outcome

    def _submit(self) -> Callable[[_Window], Awaitable[_Outcome]]:
        """The entry to the model, made on first use (inside the server's event loop)."""
        if self._batched is None:
            # One model call at a time: torch already spreads one batch over its threads.
            self._model_limiter = anyio.CapacityLimiter(1)
            if SETTINGS.batching:
                dispatcher = CorkDispatcher(
                    max_latency_in_ms=SETTINGS.max_latency_ms,
                    max_batch_size=SETTINGS.max_batch_size,
                    fallback=_overloaded,
                    get_batch_size=lambda _: 1,
                )
                self._batched = dispatcher(self._run_batch)
            else:

                async def one(item: _Window) -> _Outcome:
                    return (await self._run_batch((item,)))[0]

                self._batched = one
        return self._batched

    async def _run_batch(self, windows: Sequence[_Window]) -> list[_Outcome]:
        _BATCH_WINDOWS.observe(len(windows))
        return await anyio.to_thread.run_sync(
            self._predict_windows, list(windows), limiter=self._model_limiter
        )

    def _predict_windows(self, windows: list[_Window]) -> list[_Outcome]:
        """Forecasts windows with one model call per served version, rollout depth and levels.

        Windows asking the same levels share a call, which returns their bounds with the
        point forecast; clients of one deployment mostly ask the same levels, or none.
        """
        results: list[_Outcome | None] = [None] * len(windows)
        groups: dict[tuple[int, int, tuple[float, ...] | None], list[int]] = {}
        served_by_id: dict[int, ServedModel] = {}
        for i, item in enumerate(windows):
            served = self.watcher.for_version(item.version)
            if served is None:
                results[i] = _Outcome(status=503, error=self.watcher.unavailable_reason)
                continue
            fc = served.forecaster
            if item.history.shape != (fc.input_size, len(fc.channels)):
                results[i] = _Outcome(
                    status=422,
                    error=f"window has shape {item.history.shape}; model {served.version} "
                    f"needs ({fc.input_size}, {len(fc.channels)})",
                )
                continue
            served_by_id[id(served)] = served
            rounds = math.ceil(item.horizon / fc.horizon)  # same rollout depth, one call
            groups.setdefault((id(served), rounds, item.levels), []).append(i)
        for (served_id, _, levels), members in groups.items():
            served = served_by_id[served_id]
            batch = np.stack([windows[i].history for i in members])  # [B, L, M]
            steps = max(windows[i].horizon for i in members)
            try:
                if levels is None:
                    forecast = served.forecaster.predict_batch(batch, steps)  # [B, steps, M]
                    lower: Mapping[float, np.ndarray] = {}
                    upper: Mapping[float, np.ndarray] = {}
                else:
                    bands = served.forecaster.predict_batch(batch, steps, levels=levels)
                    forecast, lower, upper = bands.point, bands.lower, bands.upper
            except IntervalsUnavailableError:  # swapped for an uncalibrated version meanwhile
                for i in members:
                    results[i] = _Outcome(status=422, error=_uncalibrated(served.version))
                continue
            except ForecastInputError as exc:
                for i in members:
                    results[i] = _Outcome(status=422, error=str(exc))
                continue
            except Exception:
                logger.exception("inference failed on %s for %d windows", served.tag, len(members))
                for i in members:
                    results[i] = _Outcome(status=500, error="inference failed; see server log")
                continue
            for k, i in enumerate(members):
                h = windows[i].horizon
                ahead = forecast[k, :h]  # [horizon, M]
                low = {level: v[k, :h] for level, v in lower.items()}  # level -> [horizon, M]
                high = {level: v[k, :h] for level, v in upper.items()}
                if not all(np.isfinite(a).all() for a in (ahead, *low.values(), *high.values())):
                    # Values far outside the training range overflow the model's float range;
                    # JSON has no NaN, and a non-finite forecast is no answer.
                    results[i] = _Outcome(
                        status=422,
                        error="the forecast is not finite: the window's values are too far "
                        f"outside the range model {served.version} was trained on",
                    )
                    continue
                results[i] = _Outcome(ahead, low, high, model_version=served.version)
        return [r if r is not None else _Outcome(status=500, error="no result") for r in results]


def _overloaded() -> _Outcome:
    """CorkDispatcher's answer for a window it dropped to keep within max_latency_ms."""
    raise RequestError(503, "server overloaded: the batching queue passed its deadline; retry")


def _current_document() -> dict[str, Any]:
    """The OpenAPI document of this worker's service instance (for ``ContractRoutes``; the
    worker creates the instance before it accepts a connection)."""
    document: dict[str, Any] = bentoml.get_current_service().openapi_document()
    return document


# Outermost first: the guard (token, media type, size) runs before the contract's routes, so
# /docs.json needs the token like every endpoint but the health probes.
Forecaster.add_asgi_middleware(
    RequestGuard, token=SETTINGS.api_token, max_body_bytes=SETTINGS.limits.max_request_bytes
)
Forecaster.add_asgi_middleware(ContractRoutes, document=_current_document)


# --------------------------------------------------------------------------- input checks


def _fit_window(
    history: list[list[float]],
    input_size: int,
    channels: tuple[str, ...],
    *,
    where: str = "history",
) -> list[list[float]]:
    """The last ``input_size`` rows, after checking the shape against the model."""
    width = len(history[0])
    if width != len(channels):
        raise RequestError(
            422,
            f"{where} has {width} channels, the model expects {len(channels)} "
            f"({', '.join(channels)})",
        )
    if len(history) < input_size:
        raise RequestError(
            422, f"{where} has {len(history)} steps, the model needs at least {input_size}"
        )
    return history[-input_size:]


def _future_timestamps(timestamps: list[str], rows: int, horizon: int) -> list[str]:
    """Extends evenly spaced timestamps, one per history row, by ``horizon`` steps.

    Raises:
        RequestError: Not one timestamp per row, one does not parse, or they are not
            increasing and evenly spaced (then the future ones are not defined).
    """
    if len(timestamps) != rows:
        raise RequestError(
            422,
            f"timestamps has {len(timestamps)} entries for {rows} history rows; give one "
            "timestamp per row",
        )
    try:
        index = pd.DatetimeIndex(pd.to_datetime(timestamps, format="ISO8601"))
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(422, f"timestamps do not parse as ISO 8601: {exc}") from exc
    if len(index) < 2:
        raise RequestError(422, "at least two timestamps are needed to extend them")
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        bad = int(np.argmax(steps <= 0)) + 1
        raise RequestError(422, f"timestamps must increase: entry {bad} is not after {bad - 1}")
    freq = pd.infer_freq(index) if len(index) >= 3 else None
    if freq is None:
        if (steps != steps[-1]).any():
            raise RequestError(
                422, "timestamps are not evenly spaced, so the forecast's timestamps are undefined"
            )
        offset: Any = pd.Timedelta(int(steps[-1]), unit="ns")
    else:
        offset = pd.tseries.frequencies.to_offset(freq)
    try:
        future = pd.date_range(start=index[-1], periods=horizon + 1, freq=offset)[1:]
    except (ValueError, OverflowError) as exc:  # past what pandas can represent (year 2262)
        raise RequestError(422, f"the forecast's timestamps cannot be represented: {exc}") from exc
    return [ts.isoformat() for ts in future]


__all__ = ["Forecaster", "ModelWatcher", "RequestGuard"]
