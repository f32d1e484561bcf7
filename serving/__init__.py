"""Serving side of LLaTA: the BentoML service and the model registry it reads from."""
