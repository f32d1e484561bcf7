"""The public benchmark datasets: which ones exist and their fixed settings.

The ETT files (where they are published, what their bytes hash to, their split rule and
frequency) and the M4 subsets (horizon, seasonality, training history size), plus the
environment variable that points at a local mirror of both. Plain Python, no pandas or
torch: the configuration reads the M4 table to fill in a subset's sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llata_core.errors import DataError

MIRROR_ENV = "LLATA_DATA_MIRROR"


@dataclass(frozen=True)
class Benchmark:
    """A public benchmark file: where it lives and what its bytes must hash to."""

    filename: str
    url: str
    sha256: str  # of the uncompressed CSV
    split: Literal["ett_hour", "ett_minute", "ratio"]
    freq: str
    bundled: bool = False  # shipped gzipped in llata_core/datasets/


_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
BENCHMARKS: dict[str, Benchmark] = {
    "ETTh1": Benchmark(
        "ETTh1.csv",
        _ETT + "ETTh1.csv",
        "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
        "ett_hour",
        "h",
        bundled=True,
    ),
    "ETTh2": Benchmark(
        "ETTh2.csv",
        _ETT + "ETTh2.csv",
        "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
        "ett_hour",
        "h",
    ),
    "ETTm1": Benchmark(
        "ETTm1.csv",
        _ETT + "ETTm1.csv",
        "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
        "ett_minute",
        "15min",
    ),
}


@dataclass(frozen=True)
class M4Subset:
    """One M4 frequency subset and the competition's settings for it.

    Attributes:
        frequency_name: `Yearly`, `Quarterly`, `Monthly`, `Weekly`, `Daily` or `Hourly`.
        horizon: the competition's forecast horizon for the subset.
        seasonality: the period `m` used by MASE and by Naive2's seasonality test.
        history_size: training cut points are drawn from the last `history_size * horizon`
            points of a series (N-BEATS / Time-Series-Library's `M4Meta.history_size`).
        id_prefix: first letter of the subset's series ids (`H1`, `W17`, ...).
        freq: the pandas offset alias of the subset's steps (`h` for Hourly). M4 gives no
            dates; where a step needs a timestamp (the pipeline's feature store), series
            are stamped at this frequency.
    """

    frequency_name: str
    horizon: int
    seasonality: int
    history_size: float
    id_prefix: str
    freq: str


M4_SUBSETS: dict[str, M4Subset] = {
    s.frequency_name: s
    for s in (
        M4Subset("Yearly", 6, 1, 1.5, "Y", "YS"),
        M4Subset("Quarterly", 8, 4, 1.5, "Q", "QS"),
        M4Subset("Monthly", 18, 12, 1.5, "M", "MS"),
        M4Subset("Weekly", 13, 1, 10.0, "W", "W"),
        M4Subset("Daily", 14, 1, 10.0, "D", "D"),
        M4Subset("Hourly", 48, 24, 10.0, "H", "h"),
    )
}
"""M4 subsets by name. Horizons and seasonalities from the M4 competition guide
(Makridakis et al. 2020, table 1); history sizes from N-BEATS' M4 experiments."""


def m4_subset(frequency_name: str) -> M4Subset:
    """Look up an M4 subset by name, case-insensitively.

    Raises:
        DataError: the name is not one of the six M4 subsets.
    """
    subset = M4_SUBSETS.get(frequency_name.strip().capitalize())
    if subset is None:
        raise DataError(
            f"unknown M4 frequency {frequency_name!r}; expected one of {sorted(M4_SUBSETS)}"
        )
    return subset
