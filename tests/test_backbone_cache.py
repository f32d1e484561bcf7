"""A shallower cache of a pretrained backbone is cut from a deeper one, not loaded again."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from llata_core import backbone as bb
from llata_core.config import ModelConfig


def _prepare(
    n_layers: int, cache: Path, backbone: str = "tiny-llama", **kw: object
) -> bb.PreparedBackbone:
    cfg = ModelConfig(backbone=backbone, n_layers=n_layers, n_principal=16, **kw)
    return bb.prepare_backbone(cfg, cache_dir=cache)


@pytest.fixture
def local_llama(tmp_path: Path) -> str:
    """A real pretrained-style checkpoint in a local directory (3 blocks, fixed weights)."""
    from transformers import AutoModelForCausalLM

    config = bb.tiny_config("llama")
    config.num_hidden_layers = 3
    torch.manual_seed(0)
    folder = tmp_path / "local-llama"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return str(folder)


def test_a_shallower_cache_is_cut_from_a_deeper_one_with_the_same_weights(
    tmp_path: Path, local_llama: str
) -> None:
    fresh = _prepare(1, tmp_path / "fresh", local_llama)
    _prepare(2, tmp_path / "shared", local_llama)
    (Path(local_llama) / "model.safetensors").unlink()  # loading the source would now fail
    derived = _prepare(1, tmp_path / "shared", local_llama)
    assert derived.model is not None and fresh.model is not None
    torch.testing.assert_close(derived.principal, fresh.principal, rtol=0, atol=0)
    fresh_state, derived_state = fresh.model.state_dict(), derived.model.state_dict()
    assert fresh_state.keys() == derived_state.keys()
    for key, value in fresh_state.items():
        if key.startswith("embed_tokens"):
            continue  # a one-row placeholder: the cache drops the vocabulary (inputs_embeds)
        torch.testing.assert_close(derived_state[key], value, rtol=0, atol=0)
    no_llm = _prepare(0, tmp_path / "shared", local_llama)  # the LLM-free model: embeddings only
    assert no_llm.model is None
    torch.testing.assert_close(no_llm.principal, fresh.principal, rtol=0, atol=0)


def test_random_init_and_tiny_configs_are_never_cut_from_another_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _prepare(2, tmp_path, init="random")
    with caplog.at_level(logging.INFO, logger=bb.__name__):
        _prepare(1, tmp_path, init="random")
        _prepare(2, tmp_path)
        _prepare(1, tmp_path)  # a tiny config's weights depend on its depth
    built = [r.getMessage() for r in caplog.records if "preparing backbone" in r.getMessage()]
    expected = "preparing backbone tiny-llama: loading the first {} blocks"
    assert built == [expected.format(n) for n in (1, 2, 1)]
