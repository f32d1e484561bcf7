"""The checks a request's schema cannot state: its window and timestamps against the model.

The schema (``serving.bodies``) bounds rows, channels and timestamps by the configured
limits; only the served model knows how many rows and channels a window needs, and only the
timestamps themselves say whether they are evenly spaced. A request that fails here answers
422 (a stored Feast window that fails answers 409: it is the store's, not the caller's).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import pandas as pd

from llata_core.timestamps import extend_timestamps
from serving.bodies import RequestError


def fit_window(
    history: list[list[float]] | np.ndarray,
    input_size: int,
    channels: tuple[str, ...],
    *,
    where: str = "history",
) -> np.ndarray:
    """The last ``input_size`` rows as a float64 ``[input_size, M]`` array, after checking the
    shape against the model.

    ``history`` is a schema-checked request body (rectangular rows of numbers) or an array.
    Only the rows kept are converted, in one pass over their values: ``np.asarray`` on nested
    lists first walks them to find the shape, which costs as much again.

    Raises:
        RequestError: 422, the rows are not as wide as the model has channels, or there are
            fewer than ``input_size`` of them.
    """
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
    if isinstance(history, np.ndarray):
        return np.asarray(history[-input_size:], dtype=np.float64)
    values = itertools.chain.from_iterable(history[-input_size:])
    return np.fromiter(values, np.float64, count=input_size * width).reshape(input_size, width)


def future_timestamps(timestamps: list[str], rows: int, horizon: int) -> list[str]:
    """Extends evenly spaced ISO 8601 timestamps, one per history row, by ``horizon`` steps.

    Raises:
        RequestError: 422, not one timestamp per row, one does not parse, or they are not
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
    try:
        future = extend_timestamps(index, horizon)
    except ValueError as exc:
        raise RequestError(422, str(exc)) from exc
    return [ts.isoformat() for ts in future]


def fit_request_window(
    history: list[list[float]] | np.ndarray,
    timestamps: list[str] | None,
    input_size: int,
    channels: tuple[str, ...],
    horizon: int,
) -> tuple[np.ndarray, list[str] | None]:
    """A request's window fitted to the model (:func:`fit_window`) and, when the request has
    timestamps, its forecast's timestamps (:func:`future_timestamps`).

    Raises:
        RequestError: 422, the model cannot take the window or its timestamps.
    """
    window = fit_window(history, input_size, channels)
    if timestamps is None:
        return window, None
    return window, future_timestamps(timestamps, len(history), horizon)


def fit_request_windows(
    windows: Iterable[tuple[list[list[float]] | np.ndarray, list[str] | None]],
    input_size: int,
    channels: tuple[str, ...],
    horizon: int,
) -> list[tuple[np.ndarray, list[str] | None]]:
    """:func:`fit_request_window` for each of a batch request's windows, in order: the
    ``(history, timestamps)`` of a JSON body's windows, or the ``(window, None)`` of a
    ``.npy`` body's ``[windows, steps, channels]`` array.

    Raises:
        RequestError: 422 for the first window the model cannot take, named by its index
            (``windows[3]: history has 5 steps, ...``).
    """
    fitted = []
    for i, (history, timestamps) in enumerate(windows):
        try:
            fitted.append(fit_request_window(history, timestamps, input_size, channels, horizon))
        except RequestError as problem:
            raise RequestError(problem.status, f"windows[{i}]: {problem.message}") from None
    return fitted
