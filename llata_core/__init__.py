"""LLaTA: LLM-based time-series forecasting by cross-modal knowledge distillation.

References:
    Liu et al., "Taming Pre-trained LLMs for Generalised Time Series Forecasting via
    Cross-modal Knowledge Distillation" (CALF), arXiv 2403.07300.
"""

__version__ = "0.1.0"
