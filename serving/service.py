"""The LLaTA forecasting service: ``bentoml serve serving.service:Forecaster``.

Serves the registry's ``production`` model version (the student branch alone, LoRA merged,
under ``torch.inference_mode``) and follows promotions without a restart.

Endpoints:
    POST /forecast         ``{"history": [[...], ...], "timestamps": [...]?, "horizon": int?}``
                           -> ``{"forecast", "channels", "horizon", "timestamps"?,
                           "model_version"}``. ``history`` is ``steps x channels`` in the
                           data's own units, at least ``input_size`` steps (longer is cut to
                           the last ``input_size``). With ``timestamps`` (one per history row,
                           evenly spaced) the answer carries the forecast's timestamps.
    POST /forecast_series  ``{"series_id": "...", "horizon": int?}``: forecasts the series'
                           context window read from the Feast online store.
    GET  /model            the production version, metrics, data hash, trained-at, backbone.
    GET  /livez, /readyz, /metrics   BentoML's health probes and Prometheus metrics; /readyz
                           answers 503 until a production model is loaded.

Both forecast endpoints go through BentoML's adaptive-batching dispatcher (``CorkDispatcher``,
the one behind ``@bentoml.api(batchable=True)``), run in process: concurrent windows are
stacked into one ``[B, L, M]`` model call per served version and rollout depth. (A batchable
BentoML API only takes a list-shaped body, so ``/forecast``'s one-window body would need an
extra in-process HTTP hop to reach one; measured on this project's 2-core machine, that hop
halved the throughput - see benchmarks/serving/RESULTS.md.)

Errors answer JSON ``{"error": "..."}`` (BentoML's schema errors add ``"detail"``):
400 schema (bad JSON, wrong types, NaN/inf, ragged rows, limits), 401 token, 404 unknown
series, 409 feature store window incompatible with the model, 413 body too large, 415 not
JSON, 422 input that does not fit the model (channels, too short, irregular timestamps),
501 no feature store configured, 503 no production model (with the reason) or overloaded.

Configuration (environment variables, read when the worker starts):
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
    LLATA_RETRY_SECONDS       first back-off before a version that failed to load is tried
                              again, doubling up to 10 minutes (default 60).
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
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import bentoml
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher  # BentoML's adaptive batcher
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator
from starlette.responses import JSONResponse, Response

with bentoml.importing():
    import anyio
    import pandas as pd
    import torch

    from llata_core.forecaster import Forecaster as LoadedForecaster
    from llata_core.forecaster import ForecastInputError
    from serving.registry import DEFAULT_MODEL_NAME, Registry

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)
# BentoML's server logging config leaves the root logger at WARNING; swaps and refusals are
# INFO/ERROR events an operator needs to see, so this package's loggers get their own level.
logging.getLogger("serving").setLevel(os.environ.get("LLATA_LOG_LEVEL", "INFO").upper())


def _env_int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _default_torch_threads(workers: int) -> int:
    """One worker leaves a core to its event loop; several share the cores between them."""
    cores = _usable_cores()
    return max(1, cores - 1) if workers == 1 else max(1, cores // workers)


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value} must be a positive number")
    return value


# Read at import: BentoML builds the request schemas and the batching dispatcher from them when
# the module is imported, once per worker process.
MAX_REQUEST_BYTES = _env_int("LLATA_MAX_REQUEST_BYTES", 1 << 20)
MAX_STEPS = _env_int("LLATA_MAX_STEPS", 10_000)
MAX_CHANNELS = _env_int("LLATA_MAX_CHANNELS", 512)
MAX_HORIZON = _env_int("LLATA_MAX_HORIZON", 720)
BATCHING = os.environ.get("LLATA_BATCHING", "1").strip().lower() not in ("0", "false", "no", "off")
MAX_BATCH_SIZE = _env_int("LLATA_MAX_BATCH_SIZE", 64, minimum=2)
MAX_LATENCY_MS = _env_int("LLATA_MAX_LATENCY_MS", 10_000)
API_TOKEN = os.environ.get("LLATA_API_TOKEN") or None
WORKERS = _env_int("LLATA_WORKERS", min(_usable_cores(), 4))
PRECISION = os.environ.get("LLATA_PRECISION", "auto").strip().lower()
if PRECISION not in ("auto", "fp32", "bf16"):
    raise ValueError(f"LLATA_PRECISION={PRECISION!r}: use auto, fp32 or bf16")

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
_MAX_BACKOFF_SECONDS = 600.0


# --------------------------------------------------------------------------- schemas


class ForecastRequest(BaseModel):
    """Body of ``POST /forecast``."""

    model_config = ConfigDict(extra="forbid")

    history: list[list[FiniteFloat]] = Field(
        description="steps x channels, oldest row first, in the data's own units; at least "
        "the model's input_size rows (longer is cut to the last input_size)",
    )
    timestamps: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None,
        description="one ISO timestamp per history row, evenly spaced; the answer then "
        "carries the forecast's timestamps",
    )
    horizon: int | None = Field(
        default=None,
        ge=1,
        le=MAX_HORIZON,
        description="steps to forecast (default: the model's trained horizon)",
    )

    @field_validator("history")
    @classmethod
    def _rectangular(cls, rows: list[list[float]]) -> list[list[float]]:
        if not rows:
            raise ValueError("history is empty; send [steps][channels] numbers")
        if len(rows) > MAX_STEPS:
            raise ValueError(
                f"history has {len(rows)} steps; this server accepts at most {MAX_STEPS} "
                "(LLATA_MAX_STEPS)"
            )
        width = len(rows[0])
        if width == 0:
            raise ValueError("history rows are empty; each row holds one value per channel")
        if width > MAX_CHANNELS:
            raise ValueError(
                f"history has {width} channels; this server accepts at most {MAX_CHANNELS} "
                "(LLATA_MAX_CHANNELS)"
            )
        for i, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(
                    f"history is ragged: row 0 has {width} values, row {i} has {len(row)}; "
                    "every row needs one value per channel"
                )
        return rows

    @model_validator(mode="after")
    def _timestamps_match(self) -> ForecastRequest:
        if self.timestamps is not None and len(self.timestamps) != len(self.history):
            raise ValueError(
                f"timestamps has {len(self.timestamps)} entries for {len(self.history)} "
                "history rows; give one timestamp per row"
            )
        return self


class SeriesRequest(BaseModel):
    """Body of ``POST /forecast_series``."""

    model_config = ConfigDict(extra="forbid")

    series_id: str = Field(min_length=1, max_length=256, description="the Feast entity key")
    horizon: int | None = Field(default=None, ge=1, le=MAX_HORIZON)


class ForecastResponse(BaseModel):
    """Answer of ``POST /forecast``."""

    forecast: list[list[float]] = Field(description="horizon x channels, in data units")
    channels: list[str]
    horizon: int
    timestamps: list[str] | None = None
    model_version: str


class SeriesForecastResponse(ForecastResponse):
    """Answer of ``POST /forecast_series``."""

    series_id: str
    window_end: str = Field(description="timestamp of the last row of the stored window")


class ModelInfo(BaseModel):
    """Answer of ``GET /model``."""

    model_version: str
    tag: str
    backbone: str
    n_layers: int
    precision: str
    input_size: int
    horizon: int
    channels: list[str]
    metrics: dict[str, Any]
    data_sha256: str | None = None
    trained_at: str | None = None
    registered_at: str | None = None
    git_revision: str | None = None
    loaded_at: str


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
            loaded_at=self.loaded_at,
        )


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, eq=False)
class _Window:
    """One window on its way to the model, already checked against `version`'s shape."""

    history: np.ndarray  # [input_size, M], data units
    horizon: int
    version: str


@dataclass(frozen=True, eq=False)
class _Outcome:
    """A window's forecast (`[horizon, M]`, data units), or the status and error to answer."""

    forecast: np.ndarray | None = None
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
    it. A version that fails to load is refused: the old model keeps serving and the same tag
    is retried only after a back-off (60 s, doubling up to 10 minutes), never in a tight loop.

    Args:
        registry: Where the production alias lives.
        poll_seconds: Seconds between polls.
        retry_seconds: First back-off after a failed load.
    """

    def __init__(self, registry: Registry, poll_seconds: float, retry_seconds: float) -> None:
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
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

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any surprise
                logger.exception("model watcher: unexpected error; still serving the old model")

    def refresh(self) -> None:
        """One poll: load and swap in the production version if it changed."""
        with self._refresh_lock:
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
            try:
                served = self._load(tag)
            except Exception as exc:
                attempts = failure.attempts + 1 if failure else 1
                delay = min(self.retry_seconds * 2 ** (attempts - 1), _MAX_BACKOFF_SECONDS)
                self._failures[tag] = _Failure(attempts, time.monotonic() + delay)
                _SWAPS.labels(outcome="refused").inc()
                logger.error(
                    "refused production version %s (attempt %d, next try in %.0f s): %s; %s",
                    tag,
                    attempts,
                    delay,
                    exc,
                    f"still serving {current.tag}" if current else "nothing served",
                )
                if current is None:
                    self._reason = (
                        f"production version {tag} failed to load ({exc}); waiting for a "
                        "loadable promotion"
                    )
                return
            self._failures.pop(tag, None)
            self._slots = _Slots(current=served, retired=current)
            _SWAPS.labels(outcome="loaded").inc()
            logger.info(
                "now serving %s (was %s)", served.tag, current.tag if current else "nothing"
            )

    def _load(self, tag: str) -> ServedModel:
        info = self.registry.get(tag)
        forecaster = LoadedForecaster.load(info.path, precision=PRECISION)  # verifies checksums
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
# (BentoML binds `self` and merges it into the OpenAPI page).
model_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@bentoml.asgi_app(model_app, path="/")
@bentoml.service(
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 60},
    workers=WORKERS,
)
class Forecaster:
    """LLaTA forecaster: the registry's production model, hot-swapped on promotion."""

    def __init__(self) -> None:
        torch.set_num_threads(_env_int("LLATA_TORCH_THREADS", _default_torch_threads(WORKERS)))
        registry = Registry(
            os.environ.get("LLATA_MODEL_NAME") or DEFAULT_MODEL_NAME,
            os.environ.get("LLATA_REGISTRY_DIR") or None,
        )
        self.watcher = ModelWatcher(
            registry,
            poll_seconds=_env_float("LLATA_POLL_SECONDS", 2.0),
            retry_seconds=_env_float("LLATA_RETRY_SECONDS", 60.0),
        )
        self.watcher.start()
        # Feast reads go through one dedicated thread: its sqlite connection stays on the
        # thread that opened it, and a slow read never holds the event loop.
        self._feast_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llata-feast")
        self._store: FeatureStore | None = None
        self._store_problem: tuple[int, str] | None = None
        self._open_feature_store(os.environ.get("LLATA_FEATURE_REPO") or None)
        self._model_limiter: anyio.CapacityLimiter | None = None
        self._batched: Callable[[_Window], Awaitable[_Outcome]] | None = None
        logger.info(
            "worker up (%d in all): registry %s, batching %s (max %d windows, %d ms), auth %s, "
            "%s with %d torch threads",
            WORKERS,
            registry,
            "on" if BATCHING else "off",
            MAX_BATCH_SIZE,
            MAX_LATENCY_MS,
            "on" if API_TOKEN else "off",
            PRECISION,
            torch.get_num_threads(),
        )

    def _open_feature_store(self, repo: str | None) -> None:
        if repo is None:
            self._store_problem = (
                501,
                "no feature store configured: start the server with LLATA_FEATURE_REPO set",
            )
            return
        try:
            from features.store import open_feature_store  # imports feast (seconds)

            self._store = self._feast_pool.submit(open_feature_store, Path(repo)).result()
            logger.info("feature store %s opened", repo)
        except Exception as exc:  # serve /forecast even when the store is broken
            logger.exception("cannot open the feature store %s", repo)
            self._store_problem = (503, f"feature store {repo} cannot be opened: {exc}")

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        self.watcher.stop()
        self._feast_pool.shutdown(wait=False, cancel_futures=True)

    async def __is_ready__(self) -> bool:
        return self.watcher.current is not None

    # ------------------------------------------------------------------ public endpoints

    @bentoml.api(route="/forecast", input_spec=ForecastRequest, output_spec=ForecastResponse)
    async def forecast(
        self,
        history: list[list[float]],
        timestamps: list[str] | None = None,
        horizon: int | None = None,
    ) -> Response:
        """Forecast one history window (steps x channels, data units)."""
        served = self.watcher.current
        if served is None:
            return _error(503, self.watcher.unavailable_reason, retry_after=5)
        try:
            fc = served.forecaster
            window = _fit_window(history, fc.input_size, fc.channels)
            steps = horizon or fc.horizon
            future = _future_timestamps(timestamps, steps) if timestamps is not None else None
            result = await self._infer(window, steps, served.version)
        except RequestError as problem:
            return _error(problem.status, problem.message)
        return _ok(
            ForecastResponse(
                forecast=_as_lists(result.forecast),
                channels=list(fc.channels),
                horizon=steps,
                timestamps=future,
                model_version=result.model_version,
            )
        )

    @bentoml.api(
        route="/forecast_series", input_spec=SeriesRequest, output_spec=SeriesForecastResponse
    )
    async def forecast_series(self, series_id: str, horizon: int | None = None) -> Response:
        """Forecast a series from its context window in the Feast online store."""
        served = self.watcher.current
        if served is None:
            return _error(503, self.watcher.unavailable_reason, retry_after=5)
        if self._store is None:
            status, message = self._store_problem or (503, "feature store unavailable")
            return _error(status, message)
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
        fc = served.forecaster
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
            steps = horizon or fc.horizon
            result = await self._infer(window, steps, served.version)
        except RequestError as problem:
            return _error(problem.status, problem.message)
        return _ok(
            SeriesForecastResponse(
                forecast=_as_lists(result.forecast),
                channels=list(fc.channels),
                horizon=steps,
                model_version=result.model_version,
                series_id=stored.series_id,
                window_end=stored.window_end.isoformat(),
            )
        )

    @model_app.get("/model", response_model=ModelInfo)
    async def model_info(self) -> ModelInfo | JSONResponse:
        """Describe the production model being served."""
        served = self.watcher.current
        if served is None:
            return _error(503, self.watcher.unavailable_reason, retry_after=5)
        return served.info()

    # ------------------------------------------------------------------ batching

    async def _infer(self, window: list[list[float]], horizon: int, version: str) -> _Outcome:
        """Forecast one window through the batcher; an error outcome becomes a RequestError."""
        item = _Window(np.asarray(window, dtype=np.float64), horizon, version)
        outcome = await self._submit()(item)
        if outcome.error:
            raise RequestError(outcome.status, outcome.error)
        return outcome

    def _submit(self) -> Callable[[_Window], Awaitable[_Outcome]]:
        """The entry to the model, made on first use (inside the server's event loop)."""
        if self._batched is None:
            # One model call at a time: torch already spreads one batch over its threads.
            self._model_limiter = anyio.CapacityLimiter(1)
            if BATCHING:
                dispatcher = CorkDispatcher(
                    max_latency_in_ms=MAX_LATENCY_MS,
                    max_batch_size=MAX_BATCH_SIZE,
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
        """Forecasts windows with one model call per served version and rollout depth."""
        results: list[_Outcome | None] = [None] * len(windows)
        groups: dict[tuple[int, int], list[int]] = {}
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
            groups.setdefault((id(served), rounds), []).append(i)
        for (served_id, _), members in groups.items():
            served = served_by_id[served_id]
            batch = np.stack([windows[i].history for i in members])  # [B, L, M]
            steps = max(windows[i].horizon for i in members)
            try:
                forecast = served.forecaster.predict_batch(batch, steps)  # [B, steps, M]
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
                results[i] = _Outcome(
                    forecast=forecast[k, : windows[i].horizon], model_version=served.version
                )
        return [r if r is not None else _Outcome(status=500, error="no result") for r in results]


def _overloaded() -> _Outcome:
    """CorkDispatcher's answer for a window it dropped to keep within max_latency_ms."""
    raise RequestError(503, "server overloaded: the batching queue passed its deadline; retry")


Forecaster.add_asgi_middleware(RequestGuard, token=API_TOKEN, max_body_bytes=MAX_REQUEST_BYTES)


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


def _future_timestamps(timestamps: list[str], horizon: int) -> list[str]:
    """Extends evenly spaced timestamps by ``horizon`` steps.

    Raises:
        RequestError: A timestamp does not parse, or they are not increasing and evenly
            spaced (then the future ones are not defined).
    """
    try:
        index = pd.DatetimeIndex(pd.to_datetime(timestamps, format="ISO8601"))
    except (ValueError, TypeError) as exc:
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
    future = pd.date_range(start=index[-1], periods=horizon + 1, freq=offset)[1:]
    return [ts.isoformat() for ts in future]


__all__ = ["Forecaster", "ForecastRequest", "ForecastResponse", "ModelWatcher", "RequestGuard"]
