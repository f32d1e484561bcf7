"""The public benchmark datasets: which ones exist and their fixed settings.

The ETT files (where they are published, what their bytes hash to, their split rule and
frequency), plus the environment variable that points at a local mirror of them. Plain
Python, no pandas or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
