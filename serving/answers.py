"""The forecasting service's 200 answers, written by orjson straight from numpy.

The answer bodies (``serving.bodies``) name the fields, their order and which are required;
the values are not validated again (see :func:`_body`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel
from starlette.responses import Response

from serving.batching import Outcome
from serving.bodies import (
    BatchForecastResponse,
    ForecastResponse,
    SeriesForecastResponse,
    WindowForecast,
)


def forecast_answer(
    result: Outcome,
    channels: tuple[str, ...],
    horizon: int,
    *,
    timestamps: list[str] | None = None,
    series_id: str | None = None,
    window_end: str | None = None,
) -> Response:
    """The 200 answer of a one-window forecast endpoint: ``ForecastResponse``, or with
    ``series_id`` ``SeriesForecastResponse``."""
    schema = ForecastResponse if series_id is None else SeriesForecastResponse
    values = {
        **_window_values(result, channels, horizon, timestamps),
        "model_version": result.model_version,
        "series_id": series_id,
        "window_end": window_end,
    }
    return _json(_body(schema, values))


def batch_answer(
    results: list[Outcome],
    channels: tuple[str, ...],
    horizon: int,
    timestamps: list[list[str] | None],
) -> Response:
    """The 200 answer of ``/forecast_batch``: ``BatchForecastResponse``, one
    ``WindowForecast`` per window in order, and the one version that made them all."""
    forecasts = [
        _body(WindowForecast, _window_values(result, channels, horizon, stamps))
        for result, stamps in zip(results, timestamps, strict=True)
    ]
    values = {"forecasts": forecasts, "model_version": results[0].model_version}
    return _json(_body(BatchForecastResponse, values))


def _window_values(
    result: Outcome, channels: tuple[str, ...], horizon: int, timestamps: list[str] | None
) -> dict[str, Any]:
    """One window's forecast, as the fields of ``WindowForecast`` (None: absent)."""
    assert result.forecast is not None  # the batcher raises for an outcome without one
    return {
        "forecast": _numbers(result.forecast),
        "channels": list(channels),
        "horizon": horizon,
        "timestamps": timestamps,
        "intervals": [
            {"level": level, "lower": _numbers(low), "upper": _numbers(result.upper[level])}
            for level, low in result.lower.items()  # the levels asked, in their order
        ]
        or None,
    }


def _body(schema: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as a ``schema`` answer: the response model names the fields, their order and
    which are required; a None value is an absent field, omitted, never ``null``.

    Answers are not built as response models: that validates every number again, which cost
    more than the model call of a small model (the numbers read back the same). Absent fields
    are omitted because BentoML 1.4.40's HTTP client (``bentoml.SyncHTTPClient``) decodes
    answers by schema and fails on ``null`` where the schema has an optional list.

    Raises:
        RuntimeError: A required field has no value, or a value has no field.
    """
    left = dict(values)
    body = {}
    for name, field in schema.model_fields.items():
        value = left.pop(name, None)
        if value is not None:
            body[name] = value
        elif field.is_required():
            raise RuntimeError(f"the {schema.__name__} answer lacks its required {name!r}")
    if any(value is not None for value in left.values()):
        raise RuntimeError(f"{schema.__name__} has no field for {sorted(left)}")
    return body


def _json(body: dict[str, Any]) -> Response:
    """An answer written by orjson straight from the float64 arrays in it."""
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


def _numbers(values: np.ndarray) -> np.ndarray:
    """What orjson writes as nested lists of floats: C-contiguous float64 (float32 would be
    written with float32's shorter digits)."""
    return np.ascontiguousarray(values, dtype=np.float64)
