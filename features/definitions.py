"""All Feast definitions of the LLaTA feature repo, for a given dataset.

Channel names (and the context window length) depend on the dataset, so the objects are
built by `build_definitions` from the per-type builders in `entities`, `sources`, `views`
and `services`, and applied with `FeatureStore.apply` by `features.store`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from feast.feast_object import FeastObject

from features.entities import SERIES_JOIN_KEY, build_series_entity
from features.services import build_serving_service, build_training_service
from features.sources import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    build_context_window_push_source,
    build_context_window_source,
    build_observations_source,
)
from features.views import WINDOW_END, build_context_window_view, build_observations_view

RESERVED_NAMES: Final = frozenset({SERIES_JOIN_KEY, EVENT_TIMESTAMP, CREATED_TIMESTAMP, WINDOW_END})
"""Column names the stored tables use themselves; a channel may not take one."""


def check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    """Channels as a tuple, after checking they can be feature names.

    Raises:
        ValueError: No channels, a repeated name, or a reserved name.
    """
    channels = tuple(str(channel) for channel in channels)
    if not channels:
        raise ValueError("at least one channel is needed")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channel names repeat: {list(channels)}")
    clash = sorted(RESERVED_NAMES.intersection(channels))
    if clash:
        raise ValueError(f"channel names {clash} are reserved by the feature store")
    return channels


def build_definitions(channels: Sequence[str], input_size: int) -> list[FeastObject]:
    """Entity, sources, feature views and feature services for one dataset.

    Args:
        channels: Channel names, in model order.
        input_size: Context window length L.

    Returns:
        The objects to pass to `FeatureStore.apply`.
    """
    channels = check_channels(channels)
    if input_size < 1:
        raise ValueError(f"input_size must be >= 1, got {input_size}")
    series = build_series_entity()
    observations_source = build_observations_source()
    context_window_source = build_context_window_source()
    push_source = build_context_window_push_source(context_window_source)
    observations = build_observations_view(series, observations_source, channels)
    context_window = build_context_window_view(series, push_source, channels, input_size)
    return [
        series,
        observations_source,
        context_window_source,
        push_source,
        observations,
        context_window,
        build_training_service(observations),
        build_serving_service(context_window),
    ]
