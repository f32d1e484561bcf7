"""The forecasting service's HTTP contract: every status each endpoint answers, and the
OpenAPI document.

The bodies (``serving.bodies``) carry every limit a request must keep, so the document states
them by construction. What a JSON schema cannot say is answered 422 and documented as such:
the rows and channels the served model needs, timestamps that are one per row, parse and are
evenly spaced, and interval levels the served model cannot answer (no calibration, a horizon
beyond the calibrated one, too few calibration windows for a level).

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
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.responses import JSONResponse, Response

from llata_core.intervals import MAX_LEVELS
from serving.bodies import (
    LIMITS,
    BatchForecastResponse,
    BatchOptions,
    BatchRequest,
    ErrorBody,
    ForecastRequest,
    ForecastResponse,
    ModelInfo,
    SeriesForecastResponse,
    SeriesRequest,
)
from serving.npy import NPY_MEDIA_TYPE, NPY_PATH

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
    request: type[BaseModel] | None = None  # the JSON body's model
    answer: type[BaseModel] | None = None  # None: a text/plain 200
    media_type: str = "application/json"  # the request body's (NPY_MEDIA_TYPE: an array)
    query: type[BaseModel] | None = None  # the query parameters' model
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
_WINDOW_REFUSED = (
    "fewer rows than its input_size, rows not as wide as its channels, timestamps that are not "
    "one per row, do not parse or are not increasing and evenly spaced, values so large that "
    "the forecast is not finite"
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
        422: f"valid JSON the model cannot forecast: {_WINDOW_REFUSED}, or {_LEVELS_REFUSED}",
    },
)
FORECAST_BATCH = Operation(
    path="/forecast_batch",
    method="post",
    summary="Forecast several history windows in one request, all with one model version "
    f"(at most {LIMITS.max_windows}, LLATA_MAX_WINDOWS).",
    request=BatchRequest,
    answer=BatchForecastResponse,
    answers={
        200: "one forecast per window, in the request's order, all by one model version",
        **_REFUSED,
        400: _REFUSED[400] + f"; no windows, or more than {LIMITS.max_windows} (LLATA_MAX_WINDOWS)",
        422: "valid JSON the model cannot forecast, the whole request refused: a window (the "
        f"message names it, `windows[3]: ...`) with {_WINDOW_REFUSED}, or {_LEVELS_REFUSED}",
        503: _REFUSED[503] + ", or the production model changed twice while the request was "
        "forecast (retry)",
    },
)
FORECAST_BATCH_NPY = Operation(
    path=NPY_PATH,
    method="post",
    summary="/forecast_batch for a binary body: the windows as one .npy array (np.save) of "
    "shape [windows, steps, channels], float32 or float64; horizon and levels in the query "
    "(?horizon=24&levels=80&levels=95). The same answer as /forecast_batch's (no timestamps).",
    media_type=NPY_MEDIA_TYPE,
    query=BatchOptions,
    answer=BatchForecastResponse,
    answers={
        **FORECAST_BATCH.answers,
        400: "not one .npy array (a pickle or object dtype, an .npz archive, a header that "
        "does not parse), a dtype other than float32/float64, a rank other than 3, no windows "
        f"or more than {LIMITS.max_windows} (LLATA_MAX_WINDOWS), more steps or channels than "
        "LLATA_MAX_STEPS/LLATA_MAX_CHANNELS, a body shorter or longer than its header says, a "
        "NaN or infinite value, or query parameters breaking their schema (`detail` lists "
        "each violation)",
        415: "a body that is not application/x-npy",
        422: "an array the model cannot forecast, the whole request refused (`windows[0]: "
        "...`: fewer steps than its input_size, not as many channels as it has, values so "
        f"large that the forecast is not finite), or {_LEVELS_REFUSED}",
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
    return (FORECAST, FORECAST_BATCH, FORECAST_BATCH_NPY, series, *OTHERS)


# Open without the bearer token: the probes and metrics an orchestrator reads.
OPEN_PATHS = frozenset(op.path for op in OTHERS if not op.protected)
# A GET route answers HEAD too (Starlette); /docs.json is served but not documented.
ALLOWED_METHODS: dict[str, frozenset[str]] = {
    op.path: frozenset({op.method.upper(), *(("HEAD",) if op.method == "get" else ())})
    for op in operations(feature_store=True)
}
ALLOWED_METHODS["/docs.json"] = frozenset({"GET", "HEAD"})
# The media type of each path's request body.
BODY_MEDIA_TYPES = {
    op.path: op.media_type for op in operations(feature_store=True) if op.method == "post"
}


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
    answers = (ForecastResponse, BatchForecastResponse, SeriesForecastResponse, ModelInfo)
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        *((m, "validation") for m in (ForecastRequest, BatchRequest, SeriesRequest)),
        *((m, "serialization") for m in answers),
        (ErrorBody, "serialization"),
    ]
    _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
    components: dict[str, Any] = {"schemas": dict(schemas["$defs"])}
    if shape is not None:
        # HistoryWindow: each of BatchRequest's windows.
        for name in ("ForecastRequest", "HistoryWindow", "BatchRequest", "SeriesRequest"):
            components["schemas"][name] = _fit_to_model(components["schemas"][name], shape)
    if auth:
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    paths: dict[str, Any] = {}
    for op in operations(feature_store=feature_store):
        spec = _operation(op, secured=auth and op.protected, shape=shape)
        paths.setdefault(op.path, {})[op.method] = spec
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
    whether it answers levels (each where the schema has them)."""
    schema = copy.deepcopy(schema)
    levels = schema["properties"].get("levels")
    if levels is not None:
        levels["description"] += (
            f". Model {shape.version} has no calibrated intervals (422)"
            if shape.intervals_horizon is None
            else f". Model {shape.version}: calibrated for {shape.intervals_horizon} steps"
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


def _operation(op: Operation, *, secured: bool, shape: ModelShape | None) -> dict[str, Any]:
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
    elif op.media_type == NPY_MEDIA_TYPE:
        content = {NPY_MEDIA_TYPE: {"schema": _npy_body(shape)}}
        spec["requestBody"] = {"required": True, "content": content}
    if op.query is not None:
        spec["parameters"] = _query_parameters(op.query, shape)
    return spec


def _npy_body(shape: ModelShape | None) -> dict[str, Any]:
    """The schema of a ``.npy`` body: binary, its limits in words (no JSON schema reads it)."""
    description = (
        "one array written by np.save (a .npy file, never a pickle): shape [windows, steps, "
        f"channels], float32 or float64, every value finite; 1 to {LIMITS.max_windows} windows "
        f"(LLATA_MAX_WINDOWS), 1 to {LIMITS.max_steps} steps (LLATA_MAX_STEPS; the last "
        f"input_size are read), 1 to {LIMITS.max_channels} channels in the model's order "
        f"(GET /model), the body at most {LIMITS.max_request_bytes} bytes "
        "(LLATA_MAX_REQUEST_BYTES)"
    )
    if shape is not None:
        description += (
            f". Model {shape.version}: at least {shape.input_size} steps of "
            f"{len(shape.channels)} channels ({', '.join(shape.channels)})"
        )
    return {
        "type": "string",
        "format": "binary",
        "contentMediaType": NPY_MEDIA_TYPE,
        "description": description,
    }


def _query_parameters(query: type[BaseModel], shape: ModelShape | None) -> list[dict[str, Any]]:
    """The query parameters of ``query``'s fields, each with its field's schema (an absent
    parameter is the field's default; a list is repeated: ``?levels=80&levels=95``)."""
    schema = query.model_json_schema()
    if shape is not None:
        schema = _fit_to_model(schema, shape)
    parameters = []
    for name, field in schema["properties"].items():
        (value,) = (s for s in field.get("anyOf", [field]) if s.get("type") != "null")
        parameter = {
            "name": name,
            "in": "query",
            "required": name in schema.get("required", ()),
            "description": field.get("description", ""),
            "schema": value,
        }
        if value.get("type") == "array":
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters


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
