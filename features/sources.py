"""Feast data sources: the observation history and the pushed context windows.

Paths are relative to the feature repo directory; Feast joins them to the repo path it
is given, so they work from any working directory.
"""

from __future__ import annotations

from typing import Final

from feast import FileSource, PushSource

EVENT_TIMESTAMP: Final = "event_timestamp"
CREATED_TIMESTAMP: Final = "created"

OBSERVATIONS_SOURCE: Final = "observations_source"
OBSERVATIONS_PATH: Final = "data/observations.parquet"
CONTEXT_WINDOW_SOURCE: Final = "context_window_source"
CONTEXT_WINDOW_PATH: Final = "data/context_window.parquet"
CONTEXT_WINDOW_PUSH: Final = "context_window_push"


def build_observations_source() -> FileSource:
    """Per-timestamp channel values, one row per series and timestamp.

    The created timestamp breaks ties between two writes of the same observation in a
    point-in-time join: the later write wins.
    """
    return FileSource(
        name=OBSERVATIONS_SOURCE,
        path=OBSERVATIONS_PATH,
        timestamp_field=EVENT_TIMESTAMP,
        created_timestamp_column=CREATED_TIMESTAMP,
        description="Validated forecasting frame, long format keyed by series_id.",
    )


def build_context_window_source() -> FileSource:
    """Offline log of every context window pushed (the push source's batch source)."""
    return FileSource(
        name=CONTEXT_WINDOW_SOURCE,
        path=CONTEXT_WINDOW_PATH,
        timestamp_field=EVENT_TIMESTAMP,
        description="Context windows as pushed, stamped with their window end.",
    )


def build_context_window_push_source(batch_source: FileSource) -> PushSource:
    """The push source that keeps the online context windows fresh.

    Args:
        batch_source: Where pushes to the offline store are appended.
    """
    return PushSource(
        name=CONTEXT_WINDOW_PUSH,
        batch_source=batch_source,
        description="Latest input_size rows of a series, pushed when new data arrives.",
    )
