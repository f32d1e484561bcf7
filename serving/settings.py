"""The server's settings: one frozen object, read from environment variables once per worker.

Variables (each worker process reads them the first time ``serving_settings()`` is called,
which is when ``serving.bodies`` is imported: BentoML builds the request schemas from it
at import, so the limits must be known by then):

    BENTOML_HOME              BentoML home holding the model store (default ``~/bentoml``).
    LLATA_MODEL_NAME          registry model name (default ``llata-forecaster``).
    LLATA_REGISTRY_DIR        aliases/history directory (default
                              ``$BENTOML_HOME/llata_registry``).
    LLATA_FEATURE_REPO        Feast repo directory for ``/forecast_series`` (optional; Feast is
                              imported only when this is set).
    LLATA_API_TOKEN           bearer token required on every endpoint except /livez, /readyz,
                              /healthz and /metrics (optional; unset means no auth).
    LLATA_MAX_REQUEST_BYTES   request body limit in bytes (default 8388608, 8 MiB: room for
                              LLATA_MAX_WINDOWS windows of 512 x 7 values at 17 digits; the
                              same windows as a float64 ``.npy`` body take a fifth of that).
    LLATA_MAX_STEPS           most history rows accepted (default 10000).
    LLATA_MAX_CHANNELS        most channels accepted (default 512).
    LLATA_MAX_HORIZON         largest horizon accepted; beyond the trained horizon the model is
                              rolled out recursively (default 720).
    LLATA_MAX_WINDOWS         most windows in one ``/forecast_batch`` request (default 64, as
                              many as one model call takes by default); the request body must
                              still fit LLATA_MAX_REQUEST_BYTES.
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
                              copy and registry watcher (default: usable cores, at most 4):
                              one process's event loop and model thread contend for its GIL
                              (benchmarks/serving/RESULTS.md).
    LLATA_TORCH_THREADS       torch intra-op threads per worker (default: usable cores /
                              workers; with one worker, usable cores - 1 so that its event loop
                              keeps a core; at least 1).
    LLATA_PRECISION           ``auto`` (default), ``bf16`` or ``fp32``: the dtype the model's
                              weights are held in. ``auto`` is bf16 on CPUs with AVX512-BF16 or
                              AMX, fp32 elsewhere (the accuracy cost is measured in
                              benchmarks/serving/RESULTS.md). GET /model says which one is
                              served.
    LLATA_LOG_LEVEL           level of this package's loggers (default INFO).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path


def env_int(name: str, default: int, minimum: int = 1) -> int:
    """An integer environment variable, ``default`` when unset or blank.

    Raises:
        ValueError: The value is not an integer or is below ``minimum``.
    """
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


def env_float(name: str, default: float) -> float:
    """A positive, finite number from the environment, ``default`` when unset or blank.

    Raises:
        ValueError: The value is not a positive finite number.
    """
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


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """What a request may hold; the OpenAPI document states each one."""

    max_request_bytes: int
    max_steps: int
    max_channels: int
    max_horizon: int
    max_windows: int
    max_timestamp_chars: int = 64


@dataclass(frozen=True)
class ServingSettings:
    """Everything an operator sets through the environment (the variables listed above)."""

    limits: Limits
    model_name: str | None
    registry_dir: str | None
    feature_repo: Path | None
    api_token: str | None
    poll_seconds: float
    max_retry_seconds: float
    batching: bool
    max_batch_size: int
    max_latency_ms: int
    workers: int
    torch_threads: int
    precision: str
    log_level: str

    @classmethod
    def from_env(cls) -> ServingSettings:
        """Reads and checks every variable.

        Raises:
            ValueError: A variable holds a value the server cannot use.
        """
        workers = env_int("LLATA_WORKERS", min(usable_cores(), 4))
        # One worker leaves a core to its event loop; several share the cores between them.
        cores = usable_cores()
        threads = max(1, cores - 1) if workers == 1 else max(1, cores // workers)
        precision = os.environ.get("LLATA_PRECISION", "auto").strip().lower()
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"LLATA_PRECISION={precision!r}: use auto, fp32 or bf16")
        batching = os.environ.get("LLATA_BATCHING", "1").strip().lower()
        feature_repo = os.environ.get("LLATA_FEATURE_REPO") or None
        return cls(
            limits=Limits(
                max_request_bytes=env_int("LLATA_MAX_REQUEST_BYTES", 8 << 20),
                max_steps=env_int("LLATA_MAX_STEPS", 10_000),
                max_channels=env_int("LLATA_MAX_CHANNELS", 512),
                max_horizon=env_int("LLATA_MAX_HORIZON", 720),
                max_windows=env_int("LLATA_MAX_WINDOWS", 64),
            ),
            model_name=os.environ.get("LLATA_MODEL_NAME") or None,
            registry_dir=os.environ.get("LLATA_REGISTRY_DIR") or None,
            feature_repo=Path(feature_repo) if feature_repo else None,
            api_token=os.environ.get("LLATA_API_TOKEN") or None,
            poll_seconds=env_float("LLATA_POLL_SECONDS", 2.0),
            max_retry_seconds=env_float("LLATA_MAX_RETRY_SECONDS", 600.0),
            batching=batching not in ("0", "false", "no", "off"),
            max_batch_size=env_int("LLATA_MAX_BATCH_SIZE", 64, minimum=2),
            max_latency_ms=env_int("LLATA_MAX_LATENCY_MS", 10_000),
            workers=workers,
            torch_threads=env_int("LLATA_TORCH_THREADS", threads),
            precision=precision,
            log_level=os.environ.get("LLATA_LOG_LEVEL", "INFO").upper(),
        )


@functools.cache
def serving_settings() -> ServingSettings:
    """This worker's settings, read from the environment on the first call.

    Every module of the service asks here, so all of them see one reading of the
    environment, taken when the worker imports the service.

    Raises:
        ValueError: A variable holds a value the server cannot use.
    """
    return ServingSettings.from_env()
