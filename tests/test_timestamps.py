"""Code tests of the forecast's timestamps (`llata_core.timestamps.extend_timestamps`)."""

from __future__ import annotations

import pandas as pd
import pytest

from llata_core.timestamps import extend_timestamps


def test_calendar_steps_stay_calendar_steps() -> None:
    month_ends = pd.DatetimeIndex(["2024-01-31", "2024-02-29", "2024-03-31"])
    assert list(extend_timestamps(month_ends, 2)) == [
        pd.Timestamp("2024-04-30"),
        pd.Timestamp("2024-05-31"),
    ]


def test_two_timestamps_give_their_fixed_step() -> None:
    two = pd.DatetimeIndex(["2024-01-01T00:00", "2024-01-01T00:07"])
    assert list(extend_timestamps(two, 2)) == [
        pd.Timestamp("2024-01-01T00:14"),
        pd.Timestamp("2024-01-01T00:21"),
    ]


@pytest.mark.parametrize(
    ("stamps", "message"),
    [
        (["2024-01-01"], "at least two"),
        (["2024-01-02", "2024-01-01", "2024-01-03"], "entry 1 is not after 0"),
        (["2024-01-01", "2024-01-02", "2024-01-05"], "not evenly spaced"),
        (["2262-04-10", "2262-04-11"], "cannot be represented"),
    ],
)
def test_undefined_futures_are_refused(stamps: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        extend_timestamps(pd.DatetimeIndex(stamps), 3)
