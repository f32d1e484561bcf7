"""Model invariants on tiny random backbones of both families (PEFT-style)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llata_core.backbone import (
    BackboneError,
    load_language_model,
    prepare_backbone,
    principal_word_embeddings,
)
from llata_core.config import ConfigError, config_from_dict
from llata_core.losses import DistillationLoss
from llata_core.model import CrossModalMatch, LlataModel
from tests.conftest import FAMILIES, tiny_overrides


def build(backbone: str, **extra: object) -> LlataModel:
    cfg = config_from_dict(tiny_overrides(backbone, **extra))
    torch.manual_seed(0)
    return LlataModel(cfg, prepare_backbone(cfg.model))


def train_steps(model: LlataModel, steps: int = 3) -> None:
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss_fn = DistillationLoss(model.cfg.loss)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 32, 3, generator=gen)
        y = torch.randn(8, 8, 3, generator=gen)
        opt.zero_grad()
        loss_fn(model(x), y).total.backward()
        opt.step()


@pytest.mark.parametrize("backbone", FAMILIES)
def test_output_shapes(backbone: str) -> None:
    model = build(backbone)
    out = model(torch.randn(5, 32, 3))
    assert out.y_time.shape == (5, 8, 3)
    assert out.y_text is not None and out.y_text.shape == (5, 8, 3)
    assert out.f_time is not None and out.f_text is not None
    assert len(out.f_time) == len(out.f_text) == 3  # N + 1 levels
    assert all(f.shape == (5, 3, 48) for f in out.f_time + out.f_text)
    only_student = model(torch.randn(5, 32, 3), distill=False)
    assert only_student.y_text is None and only_student.f_time is None


@pytest.mark.parametrize("backbone", FAMILIES)
def test_channel_count_agnostic(backbone: str) -> None:
    model = build(backbone)
    assert model(torch.randn(2, 32, 7)).y_time.shape == (2, 8, 7)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_frozen_stay_frozen_and_trainable_change(backbone: str) -> None:
    model = build(backbone)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    after = dict(model.named_parameters())
    frozen = [n for n, p in after.items() if not p.requires_grad]
    assert frozen, "the backbone must have frozen weights"
    for name in frozen:
        assert torch.equal(before[name], after[name]), f"frozen {name} changed"
    # Everything the recipe trains actually moved.
    groups = {
        "lora": [n for n in after if "lora_" in n],
        "norm": [
            n
            for n in after
            if n.startswith("student.")
            and after[n].requires_grad
            and "lora_" not in n
            and "wpe" not in n
        ],
        "encoder": [n for n in after if n.startswith("encoder.")],
        "head": [n for n in after if n.startswith("head.")],
        "match": [n for n in after if n.startswith("match.")],
    }
    for group, names in groups.items():
        assert names, f"no {group} parameters"
        changed = [n for n in names if not torch.equal(before[n], after[n])]
        assert changed, f"no {group} parameter changed"
    # The teacher's LLM blocks are frozen, the student's base weights too.
    teacher_blocks = [n for n in after if n.startswith("teacher.") and "wpe" not in n]
    assert teacher_blocks and not any(after[n].requires_grad for n in teacher_blocks)


@pytest.mark.parametrize("backbone", FAMILIES)
def test_inference_model_equals_temporal_branch(backbone: str) -> None:
    model = build(backbone)
    train_steps(model)  # LoRA B is zero at init; make the merge matter
    model.eval()
    inference = model.to_inference()
    x = torch.randn(6, 32, 3)
    with torch.no_grad():
        expected = model(x, distill=False).y_time
        got = inference(x)
    assert (expected - got).abs().max().item() < 1e-5
    names = [n for n, _ in inference.named_parameters()]
    assert not any("lora" in n or "match" in n or "teacher" in n for n in names)


def test_no_llm_variant_runs_encoder_to_head() -> None:
    model = build("tiny-llama", model__n_layers=0)
    out = model(torch.randn(2, 32, 3))
    assert out.y_time.shape == (2, 8, 3)
    assert out.f_time is not None and len(out.f_time) == 1
    assert not any(n.startswith("student.") for n, _ in model.named_parameters())


def test_cross_attention_matches_multihead_attention_over_repeated_embeddings() -> None:
    """Projecting P once and broadcasting it equals the published per-sample repetition."""
    torch.manual_seed(0)
    d, heads, K = 16, 4, 10
    match = CrossModalMatch(d, heads)
    ref = nn.MultiheadAttention(d, heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([match.q.weight, match.k.weight, match.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([match.q.bias, match.k.bias, match.v.bias]))
        ref.out_proj.weight.copy_(match.out.weight)
        ref.out_proj.bias.copy_(match.out.bias)
    h = torch.randn(3, 5, d)
    p = torch.randn(K, d)
    expected, _ = ref(h, p.expand(3, K, d), p.expand(3, K, d))
    assert torch.allclose(match(h, p), expected, atol=1e-6)


def test_principal_embeddings_are_the_top_components() -> None:
    torch.manual_seed(0)
    emb = torch.randn(200, 12) @ torch.diag(torch.linspace(3, 0.1, 12))
    p = principal_word_embeddings(emb, 4)
    assert p.shape == (4, 12)
    norms = p.norm(dim=1)
    assert torch.all(norms[:-1] >= norms[1:])  # ordered by explained variance
    assert torch.equal(p, principal_word_embeddings(emb, 4))  # deterministic signs
    with pytest.raises(ConfigError, match="n_principal"):
        principal_word_embeddings(emb, 13)


def test_unknown_backbone_is_a_clear_error() -> None:
    cfg = config_from_dict(tiny_overrides("no-such-backbone"))
    with pytest.raises(BackboneError, match="unknown backbone 'no-such-backbone'"):
        prepare_backbone(cfg.model)


def test_wrong_window_length_is_a_clear_error() -> None:
    model = build("tiny-gpt2")
    with pytest.raises(ValueError, match=r"expected windows \[B, 32, M\]"):
        model(torch.randn(2, 30, 3))


def test_prepared_backbone_cache_is_reused(llata_home) -> None:
    cfg = config_from_dict(tiny_overrides("tiny-llama"))
    first = prepare_backbone(cfg.model)
    folders = sorted((llata_home / "backbones").iterdir())
    second = prepare_backbone(cfg.model)
    assert sorted((llata_home / "backbones").iterdir()) == folders
    assert torch.equal(first.principal, second.principal)
    assert first.config.vocab_size == 1  # the vocabulary is not carried around


def test_bundled_backbone_is_a_working_language_model() -> None:
    """The GGUF weights de-quantise to a model that knows English: if a transformers change
    broke the Q4_1 de-quantisation, `llata` would silently train on noise weights."""
    model, tokenizer = load_language_model("smollm2-135m")
    text = "The capital of France is Paris. The capital of Italy is Rome."
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        loss = float(model(ids, labels=ids).loss)
    assert loss < 4.0, f"{loss:.2f} nats/token: the de-quantised weights do not model English"
    assert loss < math.log(model.config.vocab_size) / 2  # uniform guessing scores 10.8


def test_tiny_backbones_have_no_language_model() -> None:
    with pytest.raises(BackboneError, match="no tokenizer"):
        load_language_model("tiny-llama")
