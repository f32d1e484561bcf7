"""The measured sections of RESULTS.md: training speed, training and inference cost, the
backbone probe, read from the JSON files under `benchmarks/results/`."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SPEED = RESULTS_DIR / "speed_cpu.json"
INFERENCE = RESULTS_DIR / "inference_cpu.json"
TRAIN_COST = RESULTS_DIR / "train_cost_cpu.json"
PROBE = RESULTS_DIR / "backbone_probe.json"


def train_ms_per_window() -> dict[str, float]:
    """Training ms per window of each variant's own step (the idle-machine cost table)."""
    train_ms: dict[str, float] = {}
    if TRAIN_COST.is_file():
        for row in json.loads(TRAIN_COST.read_text())["rows"]:
            train_ms.update(dict.fromkeys(row["variants"], row["ms_per_window"]))
    return train_ms


def serve_ms_per_window() -> dict[str, float]:
    """Serving ms per window of each variant for one request, as served (the inference table)."""
    serve_ms: dict[str, float] = {}
    if INFERENCE.is_file():
        for row in json.loads(INFERENCE.read_text())["rows"]:
            # As served: LLaTA models with bf16 weights, baselines in fp32; one request.
            served = "bf16" if row["architecture"].startswith("llata") else "fp32"
            if row["batch"] == 1 and row["precision"] == served:
                serve_ms.update(dict.fromkeys(row["variants"], row["ms_per_window"]))
    return serve_ms


def speed_section() -> list[str]:
    if not SPEED.is_file():
        return []
    s = json.loads(SPEED.read_text())
    per_epoch = s["train_seconds_per_epoch_extrapolated"]
    match = s["cross_modal_match_seconds"]
    load = ", ".join(f"{x:.1f}" for x in s["load_average_1min_during"])
    return [
        "## Training speed, fp32 vs bf16 autocast (CPU)",
        "",
        f"{s['what']}. Machine: {s['machine']}, {s['cpu_count']} cores, torch {s['torch']}; "
        f"1-min load average during the run: {load}. "
        f"Command: `{s['command']}` ({s['finished_at']}, revision {s['git_revision'][:12]}).",
        "",
        "| precision | median s / step | s / epoch (extrapolated) |",
        "|---|---|---|",
        *[
            f"| {k} | {s['median_step_seconds'][k]:.2f} | {per_epoch[k]:.0f} |"
            for k in ("fp32", "bf16")
        ],
        "",
        f"bf16 autocast speed-up: **{s['bf16_speedup']:.2f}x**.",
        "",
        "Cross-modal match at batch 256 (forward only): projecting the principal embeddings "
        f"once per call takes {match['project_once'] * 1000:.1f} ms; repeating them per sample as "
        f"the published code does takes {match['repeat_per_sample'] * 1000:.0f} ms.",
        "",
    ]


def inference_section() -> list[str]:
    if not INFERENCE.is_file():
        return []
    s = json.loads(INFERENCE.read_text())
    cost: dict[str, dict[tuple[str, int], float]] = {}
    about: dict[str, dict] = {}
    for row in s["rows"]:
        cost.setdefault(row["architecture"], {})[(row["precision"], row["batch"])] = row[
            "ms_per_window"
        ]
        about[row["architecture"]] = row

    def cell(name: str, precision: str, batch: int) -> str:
        value = cost[name].get((precision, batch))
        return "—" if value is None else f"{value:.3f}"

    return [
        "## Inference cost per window, by variant (CPU)",
        "",
        f"{s['what']}; median of {s['rounds']} interleaved calls, {s['torch_threads']} torch "
        f"thread(s). Machine: {s['machine']}, torch {s['torch']}. Command: `{s['command']}` "
        f"({s['finished_at']}, revision {s['git_revision'][:12]}, wall {s['wall_s']} s). "
        "Baselines are served in fp32.",
        "",
        "| inference model | variants | parameters | fp32, batch 1 | fp32, batch 256 "
        "| bf16, batch 1 | bf16, batch 256 |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {name} | {', '.join(about[name]['variants'])} | "
            f"{about[name]['parameters'] / 1e6:.2f} M | {cell(name, 'fp32', 1)} | "
            f"{cell(name, 'fp32', 256)} | {cell(name, 'bf16', 1)} | {cell(name, 'bf16', 256)} |"
            for name in cost
        ],
        "",
        "(milliseconds per window)",
        "",
    ]


def train_cost_section() -> list[str]:
    if not TRAIN_COST.is_file():
        return []
    s = json.loads(TRAIN_COST.read_text())
    load = ", ".join(f"{v:.1f}" for v in s["load_average_1min_during"])
    return [
        "## Training cost per window, by variant (CPU)",
        "",
        f"{s['what']}; median of {s['rounds']} interleaved steps, {s['torch_threads']} torch "
        f"thread(s), 1-min load average during the run: {load}. Machine: {s['machine']}, "
        f"torch {s['torch']}. Command: `{s['command']}` ({s['finished_at']}, revision "
        f"{s['git_revision'][:12]}, wall {s['wall_s']} s). Seconds per epoch: the steps of "
        "one full ETTh1-96 training epoch, without the validation pass.",
        "",
        "| training cost | variants | precision | batch | trainable / all parameters "
        "| s / step | ms / window | s / epoch |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['cost']} | {', '.join(r['variants'])} | {r['precision']} | {r['batch']} | "
            f"{r['trainable_parameters'] / 1e6:.2f} M / {r['parameters'] / 1e6:.2f} M | "
            f"{r['median_step_seconds']:.3f} | {r['ms_per_window']:.2f} | "
            f"{r['seconds_per_epoch']:.0f} |"
            for r in s["rows"]
        ],
        "",
    ]


def probe_section() -> list[str]:
    if not PROBE.is_file():
        return []
    s = json.loads(PROBE.read_text())
    kept = s["kept_blocks"]
    rows = [
        f"| {init} | {r['loss_all_blocks']:.3f} | {r['perplexity_all_blocks']:,.1f} | "
        f"{r[f'loss_after_{kept}_blocks']:.3f} |"
        for init, r in s["results"].items()
    ]
    grid = s["quantisation_grid_pretrained"]
    return [
        "## The backbone as a language model (CPU)",
        "",
        f"{s['what']}: {s['tokens_scored']:,} tokens in sequences of {s['chunk_tokens']}. "
        f"Uniform guessing over the {s['vocab_size']:,}-token vocabulary scores "
        f"{s['uniform_loss']:.3f}. Machine: {s['machine']}, torch {s['torch']}. Command: "
        f"`{s['command']}` ({s['finished_at']}, revision {s['git_revision'][:12]}, wall "
        f"{s['wall_s']} s).",
        "",
        f"| {s['backbone']} weights | loss, all {s['blocks']} blocks | perplexity "
        f"| loss read after block {kept} (logit lens) |",
        "|---|---|---|---|",
        *rows,
        "",
        f"4-bit grid of the pretrained weights in the {kept} kept blocks: "
        f"{grid['mean_distinct_values_per_group']} distinct values per group of "
        f"{grid['group_size']} on average (Q4_1 allows 16), implied quantisation noise "
        f"{grid['implied_noise_to_signal_db']} dB against the weights' variance.",
        "",
    ]
