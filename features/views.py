"""Feast feature views: observations for training, context windows for serving.

Channel names depend on the dataset, so the views are built from a list of channels
rather than declared at module level.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from feast import Entity, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Float64, String, UnixTimestamp

from features.entities import SERIES_JOIN_KEY

OBSERVATIONS_VIEW: Final = "observations"
CONTEXT_WINDOW_VIEW: Final = "context_window"
WINDOW_END: Final = "window_end"
INPUT_SIZE_TAG: Final = "input_size"


def build_observations_view(
    series: Entity,
    source: FileSource,
    channels: Sequence[str],
    ttl: timedelta = timedelta(0),
) -> FeatureView:
    """Per-timestamp channel values, for point-in-time training retrieval.

    Args:
        series: The series entity.
        source: The observations file source.
        channels: Channel names, in model order; each becomes a Float64 feature.
        ttl: How far back a point-in-time join may look for a value. Zero (no limit) is
            safe here because the frame is validated to be regular before it is stored.
    """
    return FeatureView(
        name=OBSERVATIONS_VIEW,
        entities=[series],
        ttl=ttl,
        schema=[
            Field(name=SERIES_JOIN_KEY, dtype=String),
            *(Field(name=channel, dtype=Float64) for channel in channels),
        ],
        source=source,
        online=True,
        description="Channel values of a series at one timestamp.",
    )


def build_context_window_view(
    series: Entity,
    push_source: PushSource,
    channels: Sequence[str],
    input_size: int,
) -> FeatureView:
    """The last `input_size` values of every channel of a series, for serving.

    Each channel is one Array(Float64) feature holding the window oldest first, and
    `window_end` stamps its last row. Feast arrays carry no length, so `input_size` is
    recorded as a tag and checked by `features.store` on every push and read. The TTL
    is zero: a window stays servable however old its data is (benchmark data is years old).

    Args:
        series: The series entity.
        push_source: The push source that feeds the view.
        channels: Channel names, in model order.
        input_size: Window length L.
    """
    return FeatureView(
        name=CONTEXT_WINDOW_VIEW,
        entities=[series],
        ttl=timedelta(0),
        schema=[
            Field(name=SERIES_JOIN_KEY, dtype=String),
            *(Field(name=channel, dtype=Array(Float64)) for channel in channels),
            Field(name=WINDOW_END, dtype=UnixTimestamp),
        ],
        source=push_source,
        online=True,
        description=f"Last {input_size} values of every channel of a series.",
        tags={INPUT_SIZE_TAG: str(input_size)},
    )
