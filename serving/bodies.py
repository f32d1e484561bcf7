"""The forecasting service's request and answer bodies, and its error answer.

The request models here are the ones BentoML validates requests with, so every limit a
request must keep (rows, channels, horizon, timestamp length) is a pydantic constraint and
appears in the OpenAPI document (``serving.contract``) by construction. What a JSON schema
cannot say is answered 422 (``serving.inputs``, ``ServedModel.interval_levels``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
)
from starlette.responses import JSONResponse

from llata_core.intervals import MAX_LEVELS, validate_levels
from serving.settings import serving_settings

# BentoML builds its request validators from these models when the service module is
# imported, so the limits are those of the worker's environment at import.
LIMITS = serving_settings().limits


def _integral(value: object) -> object:
    """24.0 is the integer 24 in JSON Schema, so it is one here too; 24.5 stays a float."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Steps to forecast: a JSON integer (24 or 24.0), never a string or a boolean.
Horizon = Annotated[int, Field(ge=1, le=LIMITS.max_horizon), BeforeValidator(_integral)]


def _percent(level: float) -> float:
    """One level, refused with the library's message (a fraction such as 0.8 is named one)."""
    return validate_levels([level])[0]


def _distinct(levels: list[float]) -> list[float]:
    """The schema's ``uniqueItems`` (80 and 80.0 are one level), with the library's message."""
    return list(validate_levels(levels))


# An interval level in percent. llata_core.intervals.validate_levels is the rule: inside
# (0, 100) and not below 1, since 0.8 is 80 % written as a fraction, never a 0.8 % interval.
# The schema states that rule; the validators answer with the library's messages.
Level = Annotated[
    FiniteFloat,
    AfterValidator(_percent),
    Field(json_schema_extra={"minimum": 1, "exclusiveMaximum": 100}),
]
Levels = Annotated[
    list[Level],
    Field(min_length=1, max_length=MAX_LEVELS, json_schema_extra={"uniqueItems": True}),
    AfterValidator(_distinct),
]
LEVELS_DESCRIPTION = (
    "conformal prediction interval levels in percent, e.g. [80, 95] (1 to under 100, distinct, "
    f"at most {MAX_LEVELS}); the answer then carries `intervals`, one per level in this order. "
    "Needs a calibrated model (GET /model: `intervals`) and a horizon of at most the calibrated "
    "one (the trained horizon): a recursive roll-out has no calibrated width (else 422)"
)


class HistoryWindow(BaseModel):
    """One history window with its optional timestamps: the body of ``POST /forecast`` without
    its horizon and levels, and each of ``POST /forecast_batch``'s windows."""

    # strict: a number is a JSON number, not "1.5" or true (the schema says number).
    model_config = ConfigDict(extra="forbid", strict=True)

    history: list[
        Annotated[list[FiniteFloat], Field(min_length=1, max_length=LIMITS.max_channels)]
    ] = Field(
        min_length=1,
        max_length=LIMITS.max_steps,
        description="steps x channels, oldest row first, in the data's own units, channels in "
        "the model's order (GET /model); at least the model's input_size rows (longer is cut to "
        "the last input_size), every row as wide as the model has channels",
    )
    timestamps: (
        Annotated[
            list[Annotated[str, Field(max_length=LIMITS.max_timestamp_chars)]],
            Field(max_length=LIMITS.max_steps),
        ]
        | None
    ) = Field(
        default=None,
        description="one ISO 8601 timestamp per history row, increasing and evenly spaced; the "
        "answer then carries the forecast's timestamps (else 422)",
    )

    @field_validator("history")
    @classmethod
    def _rectangular(cls, rows: list[list[float]]) -> list[list[float]]:
        width = len(rows[0])
        for i, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(
                    f"history is ragged: row 0 has {width} values, row {i} has {len(row)}; "
                    "every row needs one value per channel"
                )
        return rows


HORIZON_DESCRIPTION = (
    "steps to forecast (default or null: the model's trained horizon; longer is rolled out "
    "recursively)"
)


class ForecastRequest(HistoryWindow):
    """Body of ``POST /forecast``."""

    horizon: Horizon | None = Field(default=None, description=HORIZON_DESCRIPTION)
    levels: Levels | None = Field(default=None, description=LEVELS_DESCRIPTION)


class BatchOptions(BaseModel):
    """What ``POST /forecast_batch`` asks of all its windows: the query of
    ``POST /forecast_batch.npy``, and ``BatchRequest``'s fields besides its windows."""

    model_config = ConfigDict(extra="forbid", strict=True)

    horizon: Horizon | None = Field(
        default=None, description=HORIZON_DESCRIPTION + "; the same for every window"
    )
    levels: Levels | None = Field(
        default=None, description=LEVELS_DESCRIPTION + "; the same for every window"
    )


class BatchRequest(BatchOptions):
    """Body of ``POST /forecast_batch``: several windows, one horizon and one set of levels."""

    windows: list[HistoryWindow] = Field(
        min_length=1,
        max_length=LIMITS.max_windows,
        description="the windows to forecast, each as `/forecast` takes one (`history`, and "
        f"`timestamps` if wanted); at most {LIMITS.max_windows} (LLATA_MAX_WINDOWS), and the "
        f"whole body at most {LIMITS.max_request_bytes} bytes (LLATA_MAX_REQUEST_BYTES)",
    )


class SeriesRequest(BaseModel):
    """Body of ``POST /forecast_series``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    series_id: str = Field(min_length=1, max_length=256, description="the Feast entity key")
    horizon: Horizon | None = Field(
        default=None,
        description="steps to forecast (default or null: the model's trained horizon)",
    )
    levels: Levels | None = Field(default=None, description=LEVELS_DESCRIPTION)


class PredictionInterval(BaseModel):
    """The conformal interval at one level, around the point forecast."""

    level: float = Field(description="the level in percent, as asked")
    lower: list[list[float]] = Field(description="horizon x channels, in data units")
    upper: list[list[float]] = Field(description="horizon x channels, in data units")


class WindowForecast(BaseModel):
    """One window's forecast: the answer of ``POST /forecast`` without its model version, and
    each of ``POST /forecast_batch``'s forecasts. Absent fields are omitted, never ``null``."""

    forecast: list[list[float]] = Field(description="horizon x channels, in data units")
    channels: list[str]
    horizon: int
    timestamps: list[str] | None = Field(
        default=None, description="the forecast's timestamps, when the window had timestamps"
    )
    intervals: list[PredictionInterval] | None = Field(
        default=None,
        description="when the request had levels: one interval per level, in the order asked; "
        "lower <= forecast <= upper, each shaped like `forecast`",
    )


class ForecastResponse(WindowForecast):
    """Answer of ``POST /forecast``; absent fields are omitted, never ``null``."""

    model_version: str


class SeriesForecastResponse(ForecastResponse):
    """Answer of ``POST /forecast_series``."""

    series_id: str
    window_end: str = Field(description="timestamp of the last row of the stored window")


class BatchForecastResponse(BaseModel):
    """Answer of ``POST /forecast_batch``."""

    forecasts: list[WindowForecast] = Field(
        description="one forecast per window, in the order of the request's windows"
    )
    model_version: str = Field(description="the one model version that forecast every window")


class IntervalCalibration(BaseModel):
    """How the served model's prediction intervals were calibrated
    (``Forecaster.describe()["intervals"]``)."""

    method: str = Field(description="split-conformal-absolute-residual")
    split: str = Field(description="the calibration split")
    n_windows: int = Field(description="calibration windows (a level needs enough of them)")
    horizon: int = Field(description="calibrated steps: the most a request with levels may ask")
    data_fingerprint: str
    calibrated_at: str
    effective_levels: dict[str, float] | None = Field(
        default=None,
        description="adaptive conformal inference (the daily recalibration): the level whose "
        'quantile each nominal level reads, e.g. {"95": 96.8}; null: each reads its own',
    )


class CombinationMember(BaseModel):
    """One model of a served combination (``Forecaster.describe()["members"]``)."""

    name: str = Field(description="the candidate it was trained as")
    kind: str = Field(description="its family: llata, dlinear, patchtst")
    backbone: str | None = Field(default=None, description="its LLM backbone; null: a baseline")
    n_layers: int | None = Field(
        default=None, description="the backbone blocks it keeps; null for a baseline"
    )
    input_size: int = Field(description="its lookback: it reads the window's last rows")
    weight: float = Field(description="its weight in the mean (the weights sum to 1)")
    precision: str = Field(description="the dtype its weights are held in: bf16 or fp32")


class ModelInfo(BaseModel):
    """Answer of ``GET /model``."""

    model_version: str
    tag: str
    kind: str = Field(
        description="the model family (llata, dlinear, patchtst), or combination: the weighted "
        "mean of `members`' forecasts, input_size then being the longest member's"
    )
    members: list[CombinationMember] | None = Field(
        default=None, description="a combination's models and weights; null for one model"
    )
    backbone: str | None = Field(
        description="the LLM backbone; null for a baseline (dlinear, patchtst) and for a "
        "combination (each member's is in `members`)"
    )
    n_layers: int | None = Field(
        description="the backbone blocks kept (0: the LLM-free model); null where `backbone` is"
    )
    precision: str = Field(
        description="the dtype the weights are held in: bf16 or fp32, or mixed for a "
        "combination whose members differ (each member's is in `members`)"
    )
    input_size: int
    horizon: int
    channels: list[str]
    metrics: dict[str, int | float | str]
    data_sha256: str | None = None
    trained_at: str | None = None
    registered_at: str | None = None
    git_revision: str | None = None
    intervals: IntervalCalibration | None = Field(
        default=None, description="null: not calibrated; a request with `levels` answers 422"
    )
    loaded_at: str


class ErrorDetail(BaseModel):
    """One schema violation, as pydantic reports it."""

    model_config = ConfigDict(extra="allow")

    type: str
    loc: list[str | int] = Field(description='where, e.g. ["history", 3, 2]')
    msg: str


class ErrorBody(BaseModel):
    """Every error answer."""

    error: str = Field(description="what is wrong, naming the field, limit or setting")
    detail: list[ErrorDetail] = Field(
        default_factory=list, description="400 schema errors only: each violation"
    )


class RequestError(Exception):
    """A request that is well-formed JSON but cannot be forecast (or not now); carries its
    HTTP status, and when to retry a 503."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    def answer(self) -> JSONResponse:
        """The error answer to the request."""
        return error_response(self.status, self.message, retry_after=self.retry_after)


def error_response(status: int, message: str, *, retry_after: int | None = None) -> JSONResponse:
    """An :class:`ErrorBody` answer, with the headers its status promises (``WWW-Authenticate``
    on 401; ``Retry-After`` when given)."""
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="llata"'
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def schema_error_response(exc: ValidationError) -> JSONResponse:
    """The 400 answer to a request that breaks its schema, as BentoML answers a body that
    fails its model: the violations in ``detail``, each with its location, type and message."""
    detail = exc.errors(include_context=False, include_input=False)
    return JSONResponse(
        {"error": f"{exc.error_count()} validation error for {exc.title}", "detail": detail},
        status_code=400,
    )
