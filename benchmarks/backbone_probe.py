"""Is the bundled backbone still a working language model, and what do its first blocks do?

The accuracy matrix found that a randomly initialised SmolLM2-shaped backbone forecasts as
well as the pretrained one on full ETTh1-96 data. One suspect is the weights themselves:
the only SmolLM2 available offline is a 4-bit (Q4_1) GGUF quantisation, de-quantised to
floats on load. This probe asks the weights directly, with no time series involved:

1. next-token cross-entropy of the whole model (all 30 blocks, its own head) on a fixed
   English text, pretrained against the same architecture randomly initialised (the
   `llata-random` variant's seed); a working 135M model scores far below the uniform
   guess (ln 49152 = 10.8 nats per token), a random one at or above it;
2. the same score read out after every block (the block's hidden state through the final
   norm and the tied head, a "logit lens"), to see how much of the model's language skill
   the 6 blocks that LLaTA keeps already hold;
3. how coarse the 4-bit grid is: in every 32-weight block of the kept blocks' matrices,
   the number of distinct values and the quantisation noise it implies (uniform noise of
   one grid step, (max - min) / 15, against the weights' own variance).

The text is the Python standard library's documentation topics (`pydoc_data.topics`),
which every Python installation carries, so the probe needs no network and no data file.

    python -m benchmarks.backbone_probe --out benchmarks/results/backbone_probe.json
"""

from __future__ import annotations

import argparse
import math
import pydoc_data.topics
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from llata_core.atomic import write_json
from llata_core.backbone import load_language_model
from llata_core.jobs import provenance

RANDOM_SEED = 1234  # the seed `prepare_backbone` re-initialises `init: random` with


def corpus(n_chars: int) -> str:
    """A fixed English text: the stdlib's documentation topics, in sorted order."""
    topics = pydoc_data.topics.topics
    return "\n\n".join(topics[k] for k in sorted(topics))[:n_chars]


@torch.inference_mode()
def layer_losses(model: PreTrainedModel, chunks: torch.Tensor) -> list[float]:
    """Mean next-token cross-entropy (nats) read out after each block; the last entry is
    the model's own output.

    Args:
        model: a causal LM whose base exposes `norm` and whose head is `lm_head`.
        chunks: token ids [C, T].
    """
    base, head = model.get_decoder(), model.get_output_embeddings()
    totals = torch.zeros(model.config.num_hidden_layers)
    for ids in chunks:
        out = model(ids[None], output_hidden_states=True)
        targets = ids[1:]
        per_layer = []
        for hidden in out.hidden_states[1:-1]:  # after block 1 .. n-1, not yet normed
            logits = head(base.norm(hidden))[0, :-1]  # [T-1, V]
            per_layer.append(torch.nn.functional.cross_entropy(logits.float(), targets))
        final = out.logits[0, :-1]  # the model's own output: norm and head applied
        per_layer.append(torch.nn.functional.cross_entropy(final.float(), targets))
        totals += torch.stack(per_layer)
    return (totals / len(chunks)).tolist()


def grid_stats(model: PreTrainedModel, n_blocks: int, group: int = 32) -> dict[str, float]:
    """Distinct values per `group` consecutive weights, and the implied 4-bit noise, over
    the matrices of the first `n_blocks` blocks."""
    distinct: list[float] = []
    signal = noise = 0.0
    for layer in model.get_decoder().layers[:n_blocks]:
        for w in layer.parameters():
            if w.dim() != 2 or w.shape[-1] % group:
                continue
            g = w.detach().float().reshape(-1, group)  # [n_groups, 32]
            sample = g[:: max(1, len(g) // 2000)]  # about 2000 groups per matrix
            distinct += [len(torch.unique(row)) for row in sample]
            step = (g.max(1).values - g.min(1).values) / 15  # Q4_1: 16 levels per group
            noise += float((step**2 / 12).sum()) * group
            signal += float(g.var(unbiased=False) * g.numel())
    return {
        "mean_distinct_values_per_group": round(sum(distinct) / len(distinct), 2),
        "group_size": group,
        "implied_noise_to_signal_db": round(10 * math.log10(noise / signal), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--chars", type=int, default=16_000, help="characters of text scored")
    ap.add_argument("--chunk", type=int, default=512, help="tokens per scored sequence")
    ap.add_argument("--kept", type=int, default=6, help="blocks LLaTA keeps (params.yaml)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/backbone_probe.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    pretrained, tokenizer = load_language_model(args.backbone)
    ids = torch.tensor(tokenizer(corpus(args.chars))["input_ids"])
    n_chunks = len(ids) // args.chunk
    chunks = ids[: n_chunks * args.chunk].reshape(n_chunks, args.chunk)  # [C, T]

    torch.manual_seed(RANDOM_SEED)
    random = AutoModelForCausalLM.from_config(pretrained.config).eval()

    results = {}
    for init, model in (("pretrained", pretrained), ("random", random)):
        losses = layer_losses(model, chunks)
        results[init] = {
            "loss_after_block": [round(v, 4) for v in losses],
            "loss_all_blocks": round(losses[-1], 4),
            "perplexity_all_blocks": round(math.exp(losses[-1]), 2),
            f"loss_after_{args.kept}_blocks": round(losses[args.kept - 1], 4),
        }
        print(
            f"{init:10s}: {losses[-1]:.3f} nats/token with all {len(losses)} blocks "
            f"(perplexity {math.exp(losses[-1]):.1f}), {losses[args.kept - 1]:.3f} "
            f"after {args.kept}"
        )
    vocab = pretrained.config.vocab_size
    write_json(
        args.out,
        {
            "what": "next-token cross-entropy (nats/token) of the backbone as a language model "
            "on the stdlib documentation topics, per block (logit lens) and with all blocks",
            "backbone": args.backbone,
            "blocks": pretrained.config.num_hidden_layers,
            "kept_blocks": args.kept,
            "vocab_size": vocab,
            "uniform_loss": round(math.log(vocab), 4),
            "tokens_scored": int(chunks.numel()),
            "chunk_tokens": args.chunk,
            "results": results,
            "quantisation_grid_pretrained": grid_stats(pretrained, args.kept),
            "quantisation_grid_random": grid_stats(random, args.kept),
            "torch_threads": args.threads,
            "wall_s": round(time.monotonic() - started, 1),
            **provenance("benchmarks.backbone_probe"),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
