"""The LLaTA forecasting service (the BentoML class): ``bentoml serve serving.service:Forecaster``.

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
    POST /forecast_batch   ``{"windows": [{"history": [[...]], "timestamps": [...]?}, ...],
                           "horizon": int?, "levels": [...]?}`` -> ``{"forecasts": [{"forecast",
                           "channels", "horizon", "timestamps"?, "intervals"?}, ...],
                           "model_version"}``: up to LLATA_MAX_WINDOWS windows, each as
                           /forecast takes one, forecast together by one model version; the
                           forecasts in the windows' order.
    POST /forecast_batch.npy   the same for a ``.npy`` body (``Content-Type: application/x-npy``):
                           one ``[windows, steps, channels]`` float32/float64 array
                           (``np.save``), ``?horizon=96&levels=80&levels=95`` in the query;
                           the same answer (``serving/npy.py``).
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
reports the version it serves in ``llata_model_serving{version}`` on /metrics
(``serving/watcher.py`` keeps the model loaded). Every forecast endpoint goes through one
adaptive batcher (``serving/batching.py``).

Errors answer JSON ``{"error": "..."}`` (schema errors add a ``"detail"`` list): 400 the body
breaks the published schema (bad JSON or not a float ``.npy`` array, wrong types, NaN/inf,
ragged rows, limits), 401 token, 404 unknown series, 405 a method the path does not serve, 409
feature store window incompatible with the model, 413 body too large, 415 not the path's media
type (JSON; ``.npy`` on /forecast_batch.npy), 422 a schema-valid body the model cannot
forecast (channels, too short, timestamps not one per row or uneven, non-finite forecast,
levels asked of a model without calibrated intervals or beyond its calibrated horizon;
/forecast_batch names the window, ``windows[3]: ...``), 501 no feature store
configured, 503 no production model (with the reason) or overloaded.

Configuration: environment variables, listed in ``serving/settings.py`` and read once per
worker. The server binds 127.0.0.1:3000 unless told otherwise: ``bentoml serve
serving.service:Forecaster --host 0.0.0.0 --port 8080`` exposes it (then set
LLATA_API_TOKEN). Set ``BENTOML_DO_NOT_TRACK=True`` to keep BentoML from posting usage
events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import bentoml
import numpy as np
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

with bentoml.importing():
    import anyio
    import torch

    from serving.answers import batch_answer, forecast_answer
    from serving.batching import WindowBatcher
    from serving.bodies import (
        BatchForecastResponse,
        BatchRequest,
        ForecastRequest,
        ForecastResponse,
        HistoryWindow,
        ModelInfo,
        RequestError,
        SeriesForecastResponse,
        SeriesRequest,
        error_response,
        schema_error_response,
    )
    from serving.contract import ContractRoutes, openapi_document
    from serving.guard import RequestGuard
    from serving.inputs import fit_request_window, fit_request_windows, fit_window
    from serving.npy import NPY_PATH, read_options, read_windows
    from serving.registry import DEFAULT_MODEL_NAME, Registry
    from serving.settings import serving_settings
    from serving.watcher import ModelWatcher, ServedModel

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)
# BentoML's server logging config leaves the root logger at WARNING; swaps and refusals are
# INFO/ERROR events an operator needs to see, so this package's loggers get their own level.
logging.getLogger("serving").setLevel(serving_settings().log_level)


# GET routes: BentoML APIs are POST-only, so /model is a FastAPI route mounted beside them
# (BentoML binds `self`; serving/contract.py documents it).
model_app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
_TRAFFIC_TIMEOUT_SECONDS = 60


@bentoml.asgi_app(model_app, path="/")
@bentoml.service(
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": _TRAFFIC_TIMEOUT_SECONDS},
    workers=serving_settings().workers,
    name="Forecaster",
)
class ForecastService:
    """The BentoML service ``Forecaster``: the registry's production model, hot-swapped.

    In Python it is ``ForecastService``, so that it is not mistaken for the model it serves
    (``llata_core.forecaster.Forecaster``); BentoML, its metrics and the import path
    ``serving.service:Forecaster`` keep the name ``Forecaster``.
    """

    def __init__(self) -> None:
        self.settings = settings = serving_settings()
        torch.set_num_threads(settings.torch_threads)
        registry = Registry(settings.model_name or DEFAULT_MODEL_NAME, settings.registry_dir)
        self.watcher = ModelWatcher(
            registry,
            poll_seconds=settings.poll_seconds,
            max_retry_seconds=settings.max_retry_seconds,
            precision=settings.precision,
        )
        # BentoML creates the service in the worker's start-up, before the worker accepts a
        # connection: a production version that is set is loaded before the first request.
        self.watcher.start()
        # Feast reads go through one dedicated thread: its sqlite connection stays on the
        # thread that opened it, and a slow read never holds the event loop.
        self._feast_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llata-feast")
        self._store: FeatureStore | None = None
        self._store_problem: tuple[int, str] | None = None
        self._open_feature_store(settings.feature_repo)
        self._batcher = WindowBatcher(
            self.watcher,
            batching=settings.batching,
            max_batch_size=settings.max_batch_size,
            max_latency_ms=settings.max_latency_ms,
        )
        logger.info(
            "worker up (%d in all): registry %s, batching %s (max %d windows, %d ms), auth %s, "
            "%s with %d torch threads",
            settings.workers,
            registry,
            "on" if settings.batching else "off",
            settings.max_batch_size,
            settings.max_latency_ms,
            "on" if settings.api_token else "off",
            settings.precision,
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
            auth=self.settings.api_token is not None,
            feature_store=self.settings.feature_repo is not None,
        )

    async def _served(self) -> ServedModel:
        """The served model; while there is none, the registry is asked now, or a load already
        under way is waited for.

        Raises:
            RequestError: 503 with the reason and ``Retry-After``: no model is served.
        """
        served = self.watcher.current
        if served is None:
            # Half of BentoML's traffic timeout: a load that takes longer answers 503
            # (documented) rather than BentoML's 504.
            wait = _TRAFFIC_TIMEOUT_SECONDS / 2
            served = await anyio.to_thread.run_sync(lambda: self.watcher.serving(wait_seconds=wait))
        if served is None:
            raise RequestError(503, self.watcher.unavailable_reason, retry_after=5)
        return served

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
        try:
            served = await self._served()
            fc = served.forecaster
            steps = horizon or fc.horizon
            window, future = fit_request_window(
                history, timestamps, fc.input_size, fc.channels, steps
            )
            checked = served.interval_levels(levels, steps)
            result = await self._batcher.forecast(window, steps, served.version, checked)
        except RequestError as problem:
            return problem.answer()
        return forecast_answer(result, fc.channels, steps, timestamps=future)

    @bentoml.api(
        route="/forecast_batch", input_spec=BatchRequest, output_spec=BatchForecastResponse
    )
    async def forecast_batch(
        self,
        windows: list[HistoryWindow],
        horizon: int | None = None,
        levels: list[float] | None = None,
    ) -> Response:
        """Forecast several history windows in one request, all with one model version."""
        pairs = [(window.history, window.timestamps) for window in windows]
        return await self._forecast_windows(pairs, horizon, levels)

    # A FastAPI route (serving/npy.py says why this body has a path of its own): BentoML's
    # APIs read JSON or multipart bodies only.
    @model_app.post(NPY_PATH)
    async def forecast_batch_npy(self, request: Request) -> Response:
        """``/forecast_batch`` for a ``.npy`` body: the windows as one ``[windows, steps,
        channels]`` float array, ``horizon`` and ``levels`` in the query."""
        try:
            options = read_options(request.query_params.multi_items())
            windows = read_windows(await request.body(), self.settings.limits)
        except ValidationError as exc:
            return schema_error_response(exc)
        except RequestError as problem:
            return problem.answer()
        pairs = [(window, None) for window in windows]
        return await self._forecast_windows(pairs, options.horizon, options.levels)

    async def _forecast_windows(
        self,
        windows: Sequence[tuple[list[list[float]] | np.ndarray, list[str] | None]],
        horizon: int | None,
        levels: list[float] | None,
    ) -> Response:
        """A batch request's answer: its ``(history, timestamps)`` windows forecast together."""
        # The windows are checked against one served version and submitted together, so they
        # share model calls; a window is answered by the version it was checked against, or,
        # once that one is gone (two swaps within the request), by the current one. The rare
        # request whose windows came back from two versions is forecast again.
        for _ in range(2):
            try:
                served = await self._served()
                fc = served.forecaster
                steps = horizon or fc.horizon
                checked = served.interval_levels(levels, steps)
                fitted = fit_request_windows(windows, fc.input_size, fc.channels, steps)
                results = await self._batcher.forecast_many(
                    [window for window, _ in fitted], steps, served.version, checked
                )
            except RequestError as problem:
                return problem.answer()
            for i, result in enumerate(results):
                if result.error:
                    return error_response(result.status, f"windows[{i}]: {result.error}")
            if len({result.model_version for result in results}) == 1:
                return batch_answer(results, fc.channels, steps, [stamps for _, stamps in fitted])
        return error_response(
            503, "the production model changed twice while this request was forecast; retry"
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
            return error_response(status, message)
        try:  # the caller's levels, checked before the store is read: a 422, not a 409
            served = await self._served()
            fc = served.forecaster
            steps = horizon or fc.horizon
            checked = served.interval_levels(levels, steps)
        except RequestError as problem:
            return problem.answer()
        from features.store import UnknownSeriesError, read_context_window

        loop = asyncio.get_running_loop()
        try:
            stored = await loop.run_in_executor(
                self._feast_pool, read_context_window, self._store, series_id
            )
        except UnknownSeriesError as exc:
            return error_response(404, str(exc))
        except ValueError as exc:  # a stored window of the wrong length
            return error_response(409, f"stored context window is unusable: {exc}")
        try:
            if set(stored.channels) != set(fc.channels):
                raise RequestError(
                    409,
                    f"the feature store's channels {list(stored.channels)} do not match the "
                    f"model's {list(fc.channels)}",
                )
            order = [stored.channels.index(c) for c in fc.channels]
            values = stored.values[:, order]  # [L, M] in the model's channel order
            window = fit_window(values, fc.input_size, fc.channels, where="stored")
            result = await self._batcher.forecast(window, steps, served.version, checked)
        except RequestError as problem:
            # The window is the store's, not the caller's: one that does not fit is a conflict.
            return error_response(409 if problem.status == 422 else problem.status, problem.message)
        return forecast_answer(
            result,
            fc.channels,
            steps,
            series_id=stored.series_id,
            window_end=stored.window_end.isoformat(),
        )

    @model_app.get("/model", response_model=ModelInfo)
    async def model_info(self) -> ModelInfo | JSONResponse:
        """Describe the production model being served."""
        try:
            served = await self._served()
        except RequestError as problem:
            return problem.answer()
        return served.info()


def _current_document() -> dict[str, Any]:
    """The OpenAPI document of this worker's service instance (for ``ContractRoutes``; the
    worker creates the instance before it accepts a connection)."""
    document: dict[str, Any] = bentoml.get_current_service().openapi_document()
    return document


# Outermost first: the guard (token, media type, size) runs before the contract's routes, so
# /docs.json needs the token like every endpoint but the health probes.
# `@bentoml.service` made the class a `bentoml.Service`; mypy keeps a decorated class's own
# type (it ignores what class decorators return, python/mypy#3135), hence the cast.
_service = cast("bentoml.Service[ForecastService]", ForecastService)
_service.add_asgi_middleware(
    RequestGuard,
    token=serving_settings().api_token,
    max_body_bytes=serving_settings().limits.max_request_bytes,
)
_service.add_asgi_middleware(ContractRoutes, document=_current_document)

# The import path ``bentoml serve``, bentofile.yaml and the docs name.
Forecaster = ForecastService

__all__ = ["ForecastService", "Forecaster"]
