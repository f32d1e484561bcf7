"""The forecasting service's HTTP contract: bodies, statuses, and the OpenAPI document.

The request and answer models here are the ones BentoML validates requests with, so every
limit a request must keep (rows, channels, horizon, timestamp length) is a pydantic
constraint and appears in the document by construction. What a JSON schema cannot say is
answered 422 and documented as such: the rows and channels the served model needs,
timestamps that are one per row, parse and are evenly spaced, and interval levels the served
model cannot answer (no calibration, a horizon beyond the calibrated one, too few calibration
windows for a level).

BentoML 1.4.40 writes its own ``/docs.json`` from the API signatures alone. That document
declares the error ``detail`` a string (schema errors send a list), lists 200/400/404/500 for
every API whatever it answers (nothing for 401, 413, 415, 422, 501, 503 or ``GET /model``),
drops ``null`` from optional fields and mixes OpenAPI 3.0 with JSON Schema ``null`` types.
:class:`ContractRoutes` serves :func:`openapi_document` in its place, and answers 405 with
``Allow`` where BentoML's router would answer 404 to a method a path does not serve.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    field_validator,
)
from pydantic.json_schema import models_json_schema
from starlette.responses import JSONResponse, Response

from llata_core.intervals import MAX_LEVELS, validate_levels
from serving.settings import serving_settings

# BentoML builds its request validators from these models when the service module is
# imported, so the limits are those of the worker's environment at import.
LIMITS = serving_settings().limits

# --------------------------------------------------------------------------- bodies


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


class ForecastRequest(BaseModel):
    """Body of ``POST /forecast``."""

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
    horizon: Horizon | None = Field(
        default=None,
        description="steps to forecast (default or null: the model's trained horizon; longer is "
        "rolled out recursively)",
    )
    levels: Levels | None = Field(default=None, description=LEVELS_DESCRIPTION)

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


class ForecastResponse(BaseModel):
    """Answer of ``POST /forecast``; absent fields are omitted, never ``null``."""

    forecast: list[list[float]] = Field(description="horizon x channels, in data units")
    channels: list[str]
    horizon: int
    timestamps: list[str] | None = Field(
        default=None, description="the forecast's timestamps, when the request had timestamps"
    )
    intervals: list[PredictionInterval] | None = Field(
        default=None,
        description="when the request had levels: one interval per level, in the order asked; "
        "lower <= forecast <= upper, each shaped like `forecast`",
    )
    model_version: str


class SeriesForecastResponse(ForecastResponse):
    """Answer of ``POST /forecast_series``."""

    series_id: str
    window_end: str = Field(description="timestamp of the last row of the stored window")


class IntervalCalibration(BaseModel):
    """How the served model's prediction intervals were calibrated
    (``Forecaster.describe()["intervals"]``)."""

    method: str = Field(description="split-conformal-absolute-residual")
    split: str = Field(description="the calibration split")
    n_windows: int = Field(description="calibration windows (a level needs enough of them)")
    horizon: int = Field(description="calibrated steps: the most a request with levels may ask")
    data_fingerprint: str
    calibrated_at: str


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
    """A request that is well-formed JSON but cannot be forecast; carries its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, *, retry_after: int | None = None) -> JSONResponse:
    """An :class:`ErrorBody` answer, with the headers its status promises (``WWW-Authenticate``
    on 401; ``Retry-After`` when given)."""
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="llata"'
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Operation:
    """One documented endpoint: its bodies, and every status it answers with the reason.

    Errors answer :class:`ErrorBody` as JSON, except where ``text_errors`` (BentoML's
    readiness probe answers its 503 in plain text).
    """

    path: str
    method: str
    summary: str
    answers: Mapping[int, str]
    request: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None  # None: a text/plain 200
    protected: bool = True
    text_errors: bool = False
    tags: tuple[str, ...] = ("forecasting",)


_REFUSED = {
    400: "the body breaks this schema: not JSON, wrong types, NaN/Infinity, ragged rows, "
    "empty history, an unknown field, a limit, or interval levels outside [1, 100), repeated "
    f"or more than {MAX_LEVELS} (`detail` lists each violation)",
    413: f"body over LLATA_MAX_REQUEST_BYTES ({LIMITS.max_request_bytes} bytes), refused "
    "before it is parsed",
    415: "a body that is not application/json",
    500: "unexpected server error (logged)",
    503: "no production model loaded yet (with the reason and Retry-After), or the batching "
    "queue passed LLATA_MAX_LATENCY_MS",
}

_LEVELS_REFUSED = (
    "levels the model cannot answer: it has no calibrated intervals (`llata calibrate`), the "
    "horizon is beyond the calibrated one, or a level needs more calibration windows than it has"
)

FORECAST = Operation(
    path="/forecast",
    method="post",
    summary="Forecast one history window (steps x channels, data units).",
    request=ForecastRequest,
    answer=ForecastResponse,
    answers={
        200: "the forecast",
        **_REFUSED,
        422: "valid JSON the model cannot forecast: fewer rows than its input_size, rows not "
        "as wide as its channels, timestamps that are not one per row, do not parse or are "
        "not increasing and evenly spaced, values so large that the forecast is not finite, "
        "or " + _LEVELS_REFUSED,
    },
)
FORECAST_SERIES = Operation(
    path="/forecast_series",
    method="post",
    summary="Forecast a series from its context window in the Feast online store.",
    request=SeriesRequest,
    answer=SeriesForecastResponse,
    answers={
        200: "the forecast of the stored window",
        **_REFUSED,
        404: "no context window for that series",
        409: "the stored window does not fit the production model (length, channels or values)",
        422: _LEVELS_REFUSED,
        503: _REFUSED[503] + ", or the feature store cannot be opened",
    },
)
FORECAST_SERIES_WITHOUT_STORE = replace(
    FORECAST_SERIES,
    answers={**_REFUSED, 501: "no feature store configured (LLATA_FEATURE_REPO unset)"},
)


def _probe(
    path: str, summary: str, answers: Mapping[int, str], *, text_errors: bool = False
) -> Operation:
    """An open infrastructure endpoint of BentoML's, answering text."""
    return Operation(
        path,
        "get",
        summary,
        answers,
        protected=False,
        text_errors=text_errors,
        tags=("infrastructure",),
    )


OTHERS = (
    Operation(
        path="/model",
        method="get",
        summary="Describe the production model this worker serves.",
        answer=ModelInfo,
        answers={200: "the model", 500: _REFUSED[500], 503: "no production model yet"},
    ),
    _probe("/livez", "Liveness: the worker's event loop answers.", {200: "alive"}),
    _probe(
        "/readyz",
        "Readiness of the worker that answers: 200 once it has loaded a production model. A "
        "worker without one checks the registry on this call. Workers load a promotion each "
        "on its own; a request that reaches one still loading the first model waits for that "
        "load instead of being refused.",
        {200: "ready", 503: "no production model loaded yet"},
        text_errors=True,
    ),
    _probe("/healthz", "Liveness (Kubernetes' deprecated name for /livez).", {200: "alive"}),
    _probe("/metrics", "Prometheus metrics of all workers.", {200: "the Prometheus text format"}),
)


def operations(*, feature_store: bool) -> tuple[Operation, ...]:
    """Every documented operation of a server with or without a feature store."""
    series = FORECAST_SERIES if feature_store else FORECAST_SERIES_WITHOUT_STORE
    return (FORECAST, series, *OTHERS)


# Open without the bearer token: the probes and metrics an orchestrator reads.
OPEN_PATHS = frozenset(op.path for op in OTHERS if not op.protected)
# A GET route answers HEAD too (Starlette); /docs.json is served but not documented.
ALLOWED_METHODS: dict[str, frozenset[str]] = {
    op.path: frozenset({op.method.upper(), *(("HEAD",) if op.method == "get" else ())})
    for op in operations(feature_store=True)
}
ALLOWED_METHODS["/docs.json"] = frozenset({"GET", "HEAD"})


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class ModelShape:
    """What the served model needs of a window; the document states it when one is served."""

    version: str
    input_size: int
    channels: tuple[str, ...]
    intervals_horizon: int | None = None  # None: not calibrated


def openapi_document(
    *, shape: ModelShape | None, auth: bool, feature_store: bool
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this server as it runs now.

    The limits are those the request models were built with (``LIMITS``): the enforced ones.

    Args:
        shape: The served model's window shape, or None while nothing is served.
        auth: Whether a bearer token is required (the protected operations then declare the
            bearer scheme and 401).
        feature_store: Whether ``/forecast_series`` has a feature store (else it answers 501).

    Returns:
        The document, JSON-serialisable.
    """
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (ForecastRequest, "validation"),
        (SeriesRequest, "validation"),
        *((m, "serialization") for m in (ForecastResponse, SeriesForecastResponse, ModelInfo)),
        (ErrorBody, "serialization"),
    ]
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = {"schemas": dict(schemas["$defs"])}
    if shape is not None:
        for name in ("ForecastRequest", "SeriesRequest"):
            components["schemas"][name] = _fit_to_model(components["schemas"][name], shape)
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    paths: dict[str, Any] = {}
    for op in operations(feature_store=feature_store):
        paths.setdefault(op.path, {})[op.method] = _operation(op, secured=auth and op.protected)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LLaTA forecaster",
            "version": shape.version if shape is not None else "no production model yet",
            "description": "Forecasts with the model registry's production version. Every "
            'error is JSON `{"error": ...}`; schema errors add `detail`.',
        },
        "paths": paths,
        "components": components,
    }


def _fit_to_model(schema: dict[str, Any], shape: ModelShape) -> dict[str, Any]:
    """A request schema narrowed to the rows and channels the served model needs, and saying
    whether it answers levels."""
    schema = copy.deepcopy(schema)
    levels = schema["properties"]["levels"]
    if shape.intervals_horizon is None:
        levels["description"] += f". Model {shape.version} has no calibrated intervals (422)"
    else:
        levels["description"] += (
            f". Model {shape.version}: calibrated for {shape.intervals_horizon} steps"
        )
    if "history" not in schema["properties"]:
        return schema
    history = schema["properties"]["history"]
    width = len(shape.channels)
    if shape.input_size <= LIMITS.max_steps:
        history["minItems"] = shape.input_size
    if width <= LIMITS.max_channels:
        history["items"]["minItems"] = history["items"]["maxItems"] = width
    history["description"] += (
        f". Model {shape.version}: at least {shape.input_size} rows of {width} values "
        f"({', '.join(shape.channels)})"
    )
    return schema


def _operation(op: Operation, *, secured: bool) -> dict[str, Any]:
    answers = dict(op.answers)
    if secured:
        answers[401] = "missing or wrong bearer token"
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method}_{op.path.strip('/')}",
        "tags": list(op.tags),
        "responses": {str(s): _response(op, s, answers[s]) for s in sorted(answers)},
        "security": [{"bearer": []}] if secured else [],
    }
    if op.request is not None:
        body = {"$ref": f"#/components/schemas/{op.request.__name__}"}
        spec["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return spec


def _response(op: Operation, status: int, why: str) -> dict[str, Any]:
    text = {"text/plain": {"schema": {"type": "string"}}}
    if status < 300:
        if op.answer is None:
            return {"description": why, "content": text}
        body = {"$ref": f"#/components/schemas/{op.answer.__name__}"}
        return {"description": why, "content": {"application/json": {"schema": body}}}
    error = {"$ref": "#/components/schemas/ErrorBody"}
    answer: dict[str, Any] = {
        "description": why,
        "content": text if op.text_errors else {"application/json": {"schema": error}},
    }
    if status == 401:
        answer["headers"] = {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}}
    elif status == 503 and not op.text_errors:
        answer["headers"] = {
            "Retry-After": {
                "required": False,
                "description": "seconds; sent while no production model is loaded",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return answer


# --------------------------------------------------------------------------- routes


class ContractRoutes:
    """ASGI middleware: ``GET /docs.json`` answers :func:`openapi_document`; a documented path
    asked with a method it does not serve answers 405 with ``Allow`` (BentoML's router falls
    through to the mounted ``/model`` app there and answers 404).

    Args:
        app: The wrapped ASGI app.
        document: Builds the document for this worker as it is now.
    """

    def __init__(self, app: Any, *, document: Callable[[], dict[str, Any]]) -> None:
        self.app = app
        self.document = document

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ALLOWED_METHODS:
            await self.app(scope, receive, send)
            return
        allowed = ALLOWED_METHODS[scope["path"]]
        if scope["method"] not in allowed:
            served = ", ".join(sorted(allowed))
            answer: Response = JSONResponse(
                {"error": f"{scope['method']} is not served on {scope['path']}; use {served}"},
                status_code=405,
                headers={"Allow": served},
            )
        elif scope["path"] == "/docs.json":
            answer = JSONResponse(self.document())
        else:
            await self.app(scope, receive, send)
            return
        await answer(scope, receive, send)
