"""Feast entities: the forecasting series."""

from __future__ import annotations

from typing import Final

from feast import Entity, ValueType

SERIES_ENTITY: Final = "series"
SERIES_JOIN_KEY: Final = "series_id"


def build_series_entity() -> Entity:
    """The `series` entity, joined on `series_id`.

    Ids are strings whatever the source column holds, so that "7" pushed by the serving
    process and 7 read from a CSV address the same series.
    """
    return Entity(
        name=SERIES_ENTITY,
        join_keys=[SERIES_JOIN_KEY],
        value_type=ValueType.STRING,
        description="One time series; a frame without a series column is one series.",
    )
