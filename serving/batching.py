"""Adaptive batching: concurrent windows stacked into one model call per served version.

Every forecast endpoint goes through BentoML's adaptive-batching dispatcher
(``CorkDispatcher``, the one behind ``@bentoml.api(batchable=True)``), run in process:
concurrent windows are stacked into one ``[B, L, M]`` model call per served version, rollout
depth and interval levels (the bounds come out of the same call: point +- a stored quantile).
The windows of one ``/forecast_batch`` request are submitted together, so they share calls
with each other and with concurrent requests. A batchable BentoML API only takes a
list-shaped body, so ``/forecast``'s one-window body would need an extra in-process HTTP hop
to reach one, which costs throughput (benchmarks/serving/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import anyio
import bentoml
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher  # BentoML's adaptive batcher

from llata_core.forecaster import ForecastInputError, IntervalsUnavailableError
from serving.bodies import RequestError
from serving.watcher import ModelWatcher, ServedModel, uncalibrated_message

logger = logging.getLogger(__name__)

_BATCH_WINDOWS = bentoml.metrics.Histogram(
    name="llata_batch_windows",
    documentation="Windows per model call (adaptive batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass(frozen=True, eq=False)
class _Window:
    """One window on its way to the model, already checked against `version`'s shape."""

    history: np.ndarray  # [input_size, M], data units
    horizon: int
    version: str
    levels: tuple[float, ...] | None = None  # checked against `version` (interval_levels)


@dataclass(frozen=True, eq=False)
class Outcome:
    """A window's forecast (`[horizon, M]`, data units) with its bounds per level when asked
    (`[horizon, M]` each, in the order asked), or the status and error to answer."""

    forecast: np.ndarray | None = None
    lower: Mapping[float, np.ndarray] = field(default_factory=dict)
    upper: Mapping[float, np.ndarray] = field(default_factory=dict)
    model_version: str = ""
    status: int = 200
    error: str = ""


class WindowBatcher:
    """The one entry to the model: forecasts windows, batched when batching is on.

    One model call runs at a time: torch already spreads one batch over its threads.

    Args:
        watcher: Says which model serves a window's version.
        batching: Whether windows are batched (off: one model call per request: one window, or
            all of a ``/forecast_batch`` request's).
        max_batch_size: Most windows per model call.
        max_latency_ms: Queueing deadline; a window past it answers 503.
    """

    def __init__(
        self, watcher: ModelWatcher, *, batching: bool, max_batch_size: int, max_latency_ms: int
    ) -> None:
        self.watcher = watcher
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.max_latency_ms = max_latency_ms
        self._model_limiter: anyio.CapacityLimiter | None = None
        self._batched: Callable[[_Window], Awaitable[Outcome]] | None = None

    async def forecast(
        self,
        window: np.ndarray,
        horizon: int,
        version: str,
        levels: tuple[float, ...] | None = None,
    ) -> Outcome:
        """Forecast one window through the batcher; an error outcome becomes a RequestError.

        Args:
            window: ``[input_size, M]`` float64, data units, checked against ``version``'s
                shape (``serving.inputs.fit_window``).
            horizon: Steps to forecast.
            version: The served version the window was checked against.
            levels: Interval levels, checked against ``version`` (``interval_levels``).

        Raises:
            RequestError: The window cannot be forecast (status and message to answer).
        """
        (outcome,) = await self.forecast_many([window], horizon, version, levels)
        if outcome.error:
            raise RequestError(outcome.status, outcome.error)
        return outcome

    async def forecast_many(
        self,
        windows: Sequence[np.ndarray],
        horizon: int,
        version: str,
        levels: tuple[float, ...] | None = None,
    ) -> list[Outcome]:
        """Forecast windows submitted together, so that they share model calls (with batching
        off, they are one model call); the arguments are :meth:`forecast`'s, for each window.

        Returns:
            One outcome per window, in order; a window that cannot be forecast has its status
            and error in its outcome (the caller decides what that does to the others).
        """
        items = [_Window(window, horizon, version, levels) for window in windows]
        if not self.batching:
            return await self._run_batch(items)
        dispatched = self._dispatched()

        async def one(item: _Window) -> Outcome:
            try:
                return await dispatched(item)
            except RequestError as problem:  # dropped past the queueing deadline
                return Outcome(status=problem.status, error=problem.message)

        return list(await asyncio.gather(*(one(item) for item in items)))

    def _dispatched(self) -> Callable[[_Window], Awaitable[Outcome]]:
        """BentoML's adaptive batcher in front of the model, made on first use (inside the
        server's event loop)."""
        if self._batched is None:
            dispatcher: CorkDispatcher[_Window, Outcome] = CorkDispatcher(
                max_latency_in_ms=self.max_latency_ms,
                max_batch_size=self.max_batch_size,
                fallback=_overloaded,
                get_batch_size=lambda _: 1,
            )
            # Typed `Outcome | None` because a fallback may answer None; ours raises instead.
            self._batched = cast(
                Callable[[_Window], Awaitable[Outcome]], dispatcher(self._run_batch)
            )
        return self._batched

    async def _run_batch(self, windows: Sequence[_Window]) -> list[Outcome]:
        if self._model_limiter is None:  # made inside the server's event loop
            self._model_limiter = anyio.CapacityLimiter(1)
        _BATCH_WINDOWS.observe(len(windows))
        return await anyio.to_thread.run_sync(
            self._predict_windows, list(windows), limiter=self._model_limiter
        )

    def _predict_windows(self, windows: list[_Window]) -> list[Outcome]:
        """Forecasts windows with one model call per served version, rollout depth and levels.

        Windows asking the same levels share a call, which returns their bounds with the
        point forecast; clients of one deployment mostly ask the same levels, or none.
        """
        results: list[Outcome | None] = [None] * len(windows)
        groups: dict[tuple[int, int, tuple[float, ...] | None], list[int]] = {}
        served_by_id: dict[int, ServedModel] = {}
        for i, item in enumerate(windows):
            served = self.watcher.for_version(item.version)
            if served is None:
                results[i] = Outcome(status=503, error=self.watcher.unavailable_reason)
                continue
            fc = served.forecaster
            if item.history.shape != (fc.input_size, len(fc.channels)):
                results[i] = Outcome(
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
                    results[i] = Outcome(status=422, error=uncalibrated_message(served.version))
                continue
            except ForecastInputError as exc:
                for i in members:
                    results[i] = Outcome(status=422, error=str(exc))
                continue
            except Exception:
                logger.exception("inference failed on %s for %d windows", served.tag, len(members))
                for i in members:
                    results[i] = Outcome(status=500, error="inference failed; see server log")
                continue
            for k, i in enumerate(members):
                h = windows[i].horizon
                ahead = forecast[k, :h]  # [horizon, M]
                low = {level: v[k, :h] for level, v in lower.items()}  # level -> [horizon, M]
                high = {level: v[k, :h] for level, v in upper.items()}
                if not all(np.isfinite(a).all() for a in (ahead, *low.values(), *high.values())):
                    # Values far outside the training range overflow the model's float range;
                    # JSON has no NaN, and a non-finite forecast is no answer.
                    results[i] = Outcome(
                        status=422,
                        error="the forecast is not finite: the window's values are too far "
                        f"outside the range model {served.version} was trained on",
                    )
                    continue
                results[i] = Outcome(ahead, low, high, model_version=served.version)
        return [r if r is not None else Outcome(status=500, error="no result") for r in results]


def _overloaded() -> Outcome:
    """CorkDispatcher's answer for a window it dropped to keep within max_latency_ms."""
    raise RequestError(503, "server overloaded: the batching queue passed its deadline; retry")
