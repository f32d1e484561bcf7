"""Feast feature services: what training and serving each read."""

from __future__ import annotations

from typing import Final

from feast import FeatureService, FeatureView

TRAINING_SERVICE: Final = "training"
SERVING_SERVICE: Final = "serving"


def build_training_service(observations: FeatureView) -> FeatureService:
    """Every channel of the observations view, for point-in-time training frames."""
    return FeatureService(
        name=TRAINING_SERVICE,
        features=[observations],
        description="Channel values as of each entity row's timestamp.",
    )


def build_serving_service(context_window: FeatureView) -> FeatureService:
    """The context window view, read online by the forecasting service."""
    return FeatureService(
        name=SERVING_SERVICE,
        features=[context_window],
        description="The latest context window of a series.",
    )
