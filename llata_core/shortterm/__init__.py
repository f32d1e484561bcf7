"""Short-term forecasting as in the M4 competition: many univariate series, scored by OWA.

This is the CALF paper's short-term setting: each M4 subset is many univariate series of
different lengths, forecast `horizon` steps ahead from an input of `2 * horizon` points, and
scored with SMAPE, MASE and OWA (relative to the Naive2 benchmark on the same series).

The package has one module per job, in dependency order:

- `series`: reading an M4 subset's competition files or a long table of many series.
- `metrics`: SMAPE, MASE, OWA and the naive benchmarks (numpy), averaged the M4 way.
- `windows`: training windows, validation and test inputs, left-padded with a mask.
- `losses`: SMAPE and MASE as differentiable, masked training losses (torch).
- `task`: the short-term task in the one training harness: splits from a configuration,
  the validation score training early-stops on, and the test scores.

The M4 subsets' settings (horizon, seasonality) are in `llata_core.catalog`, with the other
public benchmarks. Every public name is re-exported here.

References:
    Makridakis, Spiliotis, Assimakopoulos, "The M4 Competition: 100,000 time series and 61
    forecasting methods", International Journal of Forecasting 36(1), 2020.
    Liu et al., "CALF: Aligning LLMs for Time Series Forecasting via Cross-modal Fine-Tuning"
    (short-term forecasting setting).
"""

from llata_core.catalog import M4_SUBSETS, M4Subset, m4_subset
from llata_core.shortterm.losses import MASELoss, SMAPELoss, divide_no_nan, mase_loss, smape_loss
from llata_core.shortterm.metrics import (
    absolute_coverage_difference,
    evaluate_forecasts,
    evaluate_m4,
    mase,
    msis,
    naive1,
    naive2,
    owa,
    random_walk_intervals,
    seasonal_indices,
    seasonal_naive,
    seasonality_test,
    smape,
)
from llata_core.shortterm.series import (
    M4_EPOCH,
    M4Dataset,
    m4_long_frame,
    m4_mirror_paths,
    read_long_format,
    read_m4,
    select_series,
)
from llata_core.shortterm.task import (
    VALUE_CHANNEL,
    Benchmark,
    Predict,
    ShortTermSplit,
    ShortTermSplits,
    benchmark_calibration_forecasts,
    benchmark_forecasts,
    bounds_scores,
    calibrate_forecasts,
    calibration_backs,
    forecast_series,
    identity_scaler,
    interval_bounds,
    interval_scores,
    load_short_term_splits,
    model_calibration_forecasts,
    model_forecasts,
    score_forecasts,
    score_model,
    validation_smape,
)
from llata_core.shortterm.windows import (
    ShortTermInputs,
    ShortTermSample,
    ShortTermTrainDataset,
    ShortTermWindows,
)

__all__ = [
    "benchmark_calibration_forecasts",
    "model_calibration_forecasts",
    "M4_EPOCH",
    "M4_SUBSETS",
    "VALUE_CHANNEL",
    "Benchmark",
    "M4Dataset",
    "M4Subset",
    "MASELoss",
    "Predict",
    "SMAPELoss",
    "ShortTermInputs",
    "ShortTermSample",
    "ShortTermSplit",
    "ShortTermSplits",
    "ShortTermTrainDataset",
    "ShortTermWindows",
    "benchmark_forecasts",
    "divide_no_nan",
    "evaluate_forecasts",
    "evaluate_m4",
    "forecast_series",
    "identity_scaler",
    "load_short_term_splits",
    "m4_long_frame",
    "m4_mirror_paths",
    "m4_subset",
    "mase",
    "mase_loss",
    "naive1",
    "naive2",
    "owa",
    "read_long_format",
    "read_m4",
    "score_forecasts",
    "score_model",
    "absolute_coverage_difference",
    "msis",
    "random_walk_intervals",
    "model_forecasts",
    "calibrate_forecasts",
    "calibration_backs",
    "interval_bounds",
    "interval_scores",
    "bounds_scores",
    "seasonal_indices",
    "select_series",
    "seasonal_naive",
    "seasonality_test",
    "smape",
    "smape_loss",
    "validation_smape",
]
