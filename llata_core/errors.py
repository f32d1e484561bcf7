"""`DataError`, the one exception for input data that cannot be used.

It has a module of its own so that everything that judges data can raise it without
importing pandas or torch: the benchmark catalog, which the configuration reads, as well
as the reader, the data policy and the loaders.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be used: missing, malformed, too short or not finite."""
