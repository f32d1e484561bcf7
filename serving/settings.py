"""The server's settings, read from environment variables once per worker process.

Every variable is listed in the docstring of ``serving/service.py``. They are read when the
service module is imported (once per worker): BentoML builds the request schemas from
:mod:`serving.contract` at import, so the limits must be known by then.
"""

from __future__ import annotations

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
    max_timestamp_chars: int = 64


@dataclass(frozen=True)
class Settings:
    """Everything an operator sets through the environment (see ``serving/service.py``)."""

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

    @classmethod
    def from_env(cls) -> Settings:
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
                max_request_bytes=env_int("LLATA_MAX_REQUEST_BYTES", 1 << 20),
                max_steps=env_int("LLATA_MAX_STEPS", 10_000),
                max_channels=env_int("LLATA_MAX_CHANNELS", 512),
                max_horizon=env_int("LLATA_MAX_HORIZON", 720),
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
        )


# Read once per worker process, when serving.contract or serving.service is first imported.
SETTINGS = Settings.from_env()
