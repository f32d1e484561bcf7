"""The binary request body of ``POST /forecast_batch.npy``: one NumPy ``.npy`` array of windows.

A JSON ``/forecast_batch`` body of 16 windows of 512 x 7 values is 57,344 numbers of text,
and parsing and validating them was the server's largest cost (benchmarks/serving/RESULTS.md).
A ``.npy`` body (``np.save``) says its dtype and shape in a short header and holds the values
as raw bytes, so the checks a schema makes of the JSON body are made here of the header (dtype,
rank, the limits) and of the values once (finite), and the array is read without a copy.

Pickles are never loaded: the header is parsed before any data is read, and an object dtype is
refused by its header (``np.load(..., allow_pickle=False)`` would refuse it too; this reader
also names the problem, refuses ``.npz`` archives and trailing bytes, and never allocates
more than the body holds).

Why its own path, not a second media type of ``/forecast_batch``: the horizon and levels of a
binary body come as query parameters, and an OpenAPI operation's parameters hold for every
media type of its body, so one path would document query parameters that a JSON body ignores;
BentoML's router also matches ``/forecast_batch`` (its JSON API) before any mounted app could
look at the media type. ``/forecast_batch`` answers an ``.npy`` body 415 naming this path.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable

import numpy as np

from serving.bodies import BatchOptions, RequestError
from serving.settings import Limits

NPY_MEDIA_TYPE = "application/x-npy"
NPY_PATH = "/forecast_batch.npy"
# The query parameters that are lists (?levels=80&levels=95); the others take one value.
_LIST_PARAMETERS = frozenset({"levels"})


def read_options(query: Iterable[tuple[str, str]]) -> BatchOptions:
    """The horizon and levels of a ``.npy`` request, from its query, validated by the rules
    of ``BatchRequest``'s same fields (numbers are parsed from the query's text).

    Raises:
        pydantic.ValidationError: A parameter breaks those rules, is unknown or repeated.
    """
    values: dict[str, list[str]] = {}
    for name, value in query:
        values.setdefault(name, []).append(value)
    options = {
        name: given if name in _LIST_PARAMETERS or len(given) > 1 else given[0]
        for name, given in values.items()
    }
    return BatchOptions.model_validate(options, strict=False)


def read_windows(body: bytes, limits: Limits) -> np.ndarray:
    """The ``[windows, steps, channels]`` array of a ``.npy`` body, checked as the JSON body's
    schema checks its windows: float values, all finite, within the server's limits.

    Args:
        body: The request body, as ``np.save`` writes an array.
        limits: The server's limits (windows, steps, channels per request).

    Returns:
        A read-only view of the body: float32 or float64 as sent (either byte order).

    Raises:
        RequestError: 400 naming the problem: not a ``.npy`` array, a header that does not
            parse, a dtype other than float32/float64 (objects, that is pickles, included), a
            rank other than 3, an empty or too large dimension, a body shorter or longer than
            its header says, a value that is NaN or infinite.
    """
    if not body.startswith(np.lib.format.MAGIC_PREFIX):
        kind = "a .npz archive" if body.startswith(b"PK\x03\x04") else "not a .npy array"
        raise RequestError(
            400,
            f"the body is {kind}: a .npy body starts with NumPy's magic string \\x93NUMPY "
            "(write one array with np.save)",
        )
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not read (use 1.0)")
    except ValueError as exc:
        raise RequestError(400, f"the .npy header does not parse: {exc}") from None
    _check_header(shape, dtype, limits)
    count = math.prod(shape)
    held = len(body) - stream.tell()
    if held != count * dtype.itemsize:
        problem = "truncated" if held < count * dtype.itemsize else "has trailing bytes"
        raise RequestError(
            400,
            f"the .npy body is {problem}: its header says {dtype.name} {list(shape)}, "
            f"{count * dtype.itemsize} bytes of values, and it holds {held}",
        )
    windows = np.frombuffer(body, dtype=dtype, count=count, offset=stream.tell())
    windows = windows.reshape(shape, order="F" if fortran_order else "C")
    finite = np.isfinite(windows)
    if not finite.all():
        i, step, channel = (int(k) for k in np.argwhere(~finite)[0])
        raise RequestError(
            400,
            f"windows[{i}] holds {windows[i, step, channel]} at step {step}, channel "
            f"{channel}: every value must be a finite number",
        )
    return windows


def _check_header(shape: tuple[int, ...], dtype: np.dtype, limits: Limits) -> None:
    """The dtype and shape of a ``.npy`` header against what the body may hold (400)."""
    if dtype.kind != "f" or dtype.itemsize not in (4, 8):
        what = "objects (a pickle, never loaded)" if dtype.hasobject else dtype.str
        raise RequestError(400, f"the array holds {what}; send float32 or float64 values")
    if len(shape) != 3:
        raise RequestError(
            400,
            f"the array has shape {list(shape)}; send one of [windows, steps, channels] "
            "(a single window is [1, steps, channels])",
        )
    bounds = (
        ("windows", limits.max_windows, "LLATA_MAX_WINDOWS"),
        ("steps", limits.max_steps, "LLATA_MAX_STEPS"),
        ("channels", limits.max_channels, "LLATA_MAX_CHANNELS"),
    )
    for size, (name, most, setting) in zip(shape, bounds, strict=True):
        if not 1 <= size <= most:
            raise RequestError(
                400,
                f"the array has {size} {name} (shape {list(shape)}); send 1 to {most} ({setting})",
            )
