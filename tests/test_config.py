"""Configuration: validated once at the edge, frozen below."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llata_core.config import ConfigError, LlataConfig, load_params, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_validate_to_the_paper_recipe() -> None:
    cfg = load_params(ROOT / "params.yaml")
    assert cfg.model.backbone == "smollm2-135m" and cfg.model.n_layers == 6
    assert cfg.model.n_principal == 500 and cfg.model.lora.r == 8 and cfg.model.lora.alpha == 32
    assert (cfg.loss.w_out, cfg.loss.w_feat, cfg.loss.decay) == (1.0, 0.01, 0.8)
    assert (cfg.train.lr, cfg.train.proj_lr, cfg.train.t_max) == (5e-4, 1e-4, 20)


def test_overrides_are_typed_yaml() -> None:
    assert parse_overrides(["train.epochs=3", "model.backbone=tiny-gpt2"]) == {
        "train": {"epochs": 3},
        "model": {"backbone": "tiny-gpt2"},
    }
    cfg = load_params(None, ["train.epochs=3", "loss.w_out=0", "loss.w_feat=0"])
    assert cfg.train.epochs == 3
    assert not cfg.loss.distills  # no teacher needed: the "no distillation" ablation


def test_unknown_key_and_bad_value_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="epoch"):
        load_params(bad)
    with pytest.raises(ConfigError, match="input_size"):
        load_params(None, ["data.input_size=0"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_params(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_config_is_frozen() -> None:
    cfg = LlataConfig()
    with pytest.raises(ValidationError):
        cfg.train.epochs = 5  # type: ignore[misc]
