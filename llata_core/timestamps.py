"""The timestamps of a forecast: those that follow an evenly spaced history.

The command line (`llata forecast`, through `jobs.forecast_frame`) and the service
(`POST /forecast` with `timestamps`) both date their forecasts with `extend_timestamps`,
so a file and a request with the same history get the same future timestamps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset


def extend_timestamps(history: pd.DatetimeIndex, horizon: int) -> pd.DatetimeIndex:
    """The `horizon` timestamps after `history`, continuing its spacing.

    The step is the frequency pandas infers, so calendar steps (month ends, business days)
    stay calendar steps; with two timestamps, or a spacing pandas cannot name, it is the one
    fixed interval between them all.

    Args:
        history: Increasing, evenly spaced timestamps, one per history row.
        horizon: How many future timestamps.

    Returns:
        `horizon` timestamps, the first one step after `history[-1]`.

    Raises:
        ValueError: Fewer than two timestamps, not increasing, not evenly spaced (then the
            future ones are not defined), or a future one past what pandas can represent
            (the year 2262).
    """
    if len(history) < 2:
        raise ValueError("at least two timestamps are needed to extend them")
    steps = np.diff(history.asi8)
    if (steps <= 0).any():
        bad = int(np.argmax(steps <= 0)) + 1
        raise ValueError(f"timestamps must increase: entry {bad} is not after {bad - 1}")
    freq = pd.infer_freq(history) if len(history) >= 3 else None
    if freq is None:
        if (steps != steps[-1]).any():
            raise ValueError(
                "timestamps are not evenly spaced, so the forecast's timestamps are undefined"
            )
        offset: pd.Timedelta | pd.DateOffset = pd.Timedelta(int(steps[-1]), unit=history.unit)
    else:
        offset = to_offset(freq)
    try:
        return pd.date_range(start=history[-1], periods=horizon + 1, freq=offset)[1:]
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"the forecast's timestamps cannot be represented: {exc}") from exc
