"""The request checks the schema cannot state (``serving.inputs``), without a server."""

from __future__ import annotations

import numpy as np
import pytest

from serving.bodies import RequestError
from serving.inputs import fit_window

CHANNELS = ("a", "b", "c")


def test_fit_window_keeps_the_last_rows_as_float64_from_lists_and_arrays() -> None:
    history = np.arange(30, dtype=np.float64).reshape(10, 3) / 7  # values with long reprs
    rows = history.tolist()
    rows[-1][0] = 5  # a JSON integer is a number too
    expected = np.asarray(rows[-4:], dtype=np.float64)
    from_lists = fit_window(rows, 4, CHANNELS)
    assert from_lists.dtype == np.float64 and from_lists.flags.c_contiguous
    np.testing.assert_array_equal(from_lists, expected)
    np.testing.assert_array_equal(fit_window(np.asarray(rows), 4, CHANNELS), expected)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[1.0, 2.0]] * 5, "has 2 channels, the model expects 3"),
        ([[1.0, 2.0, 3.0]] * 3, "has 3 steps, the model needs at least 4"),
    ],
)
def test_fit_window_refuses_a_window_the_model_cannot_take(rows, message) -> None:
    with pytest.raises(RequestError, match=message) as caught:
        fit_window(rows, 4, CHANNELS)
    assert caught.value.status == 422
