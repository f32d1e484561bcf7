"""The request checks the schema cannot state (``serving.inputs``), without a server."""

from __future__ import annotations

import numpy as np
import pytest

from serving.bodies import RequestError
from serving.inputs import fit_request_windows, fit_window

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


def test_fit_request_windows_names_the_window_it_refuses() -> None:
    # A JSON body's windows as (history, timestamps); an .npy body's as (array, None).
    good = ([[1.0, 2.0, 3.0]] * 4, None)
    dated = ([[1.0, 2.0, 3.0]] * 4, [f"2024-01-01T0{h}:00:00" for h in range(4)])
    short = (np.ones((3, 3)), None)

    fitted = fit_request_windows([good, dated], 4, CHANNELS, 2)
    with pytest.raises(RequestError, match=r"^windows\[1\]: history has 3 steps") as caught:
        fit_request_windows([good, short, good], 4, CHANNELS, 2)

    assert [window.shape for window, _ in fitted] == [(4, 3), (4, 3)]
    future = ["2024-01-01T04:00:00", "2024-01-01T05:00:00"]
    assert [stamps for _, stamps in fitted] == [None, future]
    assert caught.value.status == 422
