"""Shared fixtures: tiny backbones of both families, small deterministic data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FAMILIES = ("tiny-gpt2", "tiny-llama")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def llata_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Backbone and data caches in a temp dir, so tests never touch the user's cache."""
    home = tmp_path_factory.mktemp("llata_home")
    os.environ["LLATA_HOME"] = str(home)
    return home


def tiny_overrides(backbone: str = "tiny-gpt2", **extra: object) -> dict:
    """A config dict for a model small enough to train in a second on the CPU."""
    cfg: dict = {
        "data": {"dataset": "synthetic", "input_size": 32, "horizon": 8},
        "model": {
            "backbone": backbone,
            "n_layers": 2,
            "n_principal": 16,
            "encoder_heads": 4,
            "encoder_ffn": 64,
        },
        "train": {
            "batch_size": 32,
            "eval_batch_size": 64,
            "epochs": 2,
            "patience": 5,
            "precision": "fp32",
            "seed": 0,
            "max_steps_per_epoch": 4,
            "max_eval_windows": 64,
        },
    }
    for dotted, value in extra.items():
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    return cfg


def sine_frame(n_rows: int = 600, n_channels: int = 3, seed: int = 0) -> pd.DataFrame:
    """A learnable signal: noisy sines with a 24-step period, hourly timestamps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows)
    cols = {
        f"c{i}": np.sin(2 * np.pi * t / 24 + i) + 0.05 * rng.normal(size=n_rows) + i
        for i in range(n_channels)
    }
    frame = pd.DataFrame(cols)
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=n_rows, freq="h"))
    return frame


@pytest.fixture
def sine_csv(tmp_path: Path) -> Path:
    path = tmp_path / "sine.csv"
    sine_frame().to_csv(path, index=False)
    return path
