"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.schemathesis_npy``): `.npy` request bodies.

The document describes a ``.npy`` body (``application/x-npy``) as binary with its rules in
words; no JSON schema can say "an array np.save wrote", so schemathesis cannot generate one
from it. This strategy writes the bodies a client sends: ``[windows, steps, channels]``
float32 or float64 arrays of finite values within the server's limits, the channels and
shortest window of the served model, passed by the test in ``LLATA_NPY_BODIES`` as
``max_windows,input_size,max_steps,channels``. The query parameters (horizon, levels) are
generated from their schemas, positive and negative, as for any operation; malformed bodies
are tested one by one in tests/test_serving_batch.py.
"""

from __future__ import annotations

import io
import os

import numpy as np
import schemathesis
from hypothesis import strategies as st

from serving.npy import NPY_MEDIA_TYPE


@st.composite
def npy_bodies(draw: st.DrawFn) -> bytes:
    """One ``.npy`` array of windows, as ``np.save`` writes it."""
    max_windows, input_size, max_steps, channels = (
        int(v) for v in os.environ["LLATA_NPY_BODIES"].split(",")
    )
    n = draw(st.integers(1, max_windows))
    steps = draw(st.integers(input_size, min(max_steps, input_size + 16)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    values = draw(
        st.lists(
            st.floats(-1e4, 1e4, allow_nan=False, width=32),
            min_size=n * steps * channels,
            max_size=n * steps * channels,
        )
    )
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=dtype).reshape(n, steps, channels))
    return buffer.getvalue()


schemathesis.openapi.media_type(NPY_MEDIA_TYPE, npy_bodies())
