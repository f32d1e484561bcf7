"""Serving benchmark: one ETTh1 window (96 steps x 7 channels) through every layer, side by side.

One run measures, on the same machine state:

1. in process, no server (same torch thread count as the server): `Forecaster.predict` on
   the window, the student-only inference model's forward pass, and the full two-branch
   training model's forward pass (`LlataModel(x, distill=True)`, eval mode), interleaved
   call by call (what serving the student alone saves), in the served precision and in
   fp32, and the served precision's test-set accuracy against fp32;
2. four `bentoml serve serving.service:Forecaster` servers started side by side, all with
   the service's defaults (`LLATA_PRECISION=auto`: bf16 weights on a CPU with
   AVX512-BF16/AMX; `LLATA_WORKERS`: one worker process per core, at most 4) unless named:
   adaptive batching on, batching off (`LLATA_BATCHING=0`), batching on with one worker
   (`LLATA_WORKERS=1`), and batching on in fp32 (`LLATA_PRECISION=fp32`);
3. latency at concurrency 1: rounds of one in-process `predict` and one request to each
   server, in rotating order, so slow drifts of a shared machine hit every variant alike;
   the server overhead is the median of the paired differences;
4. throughput at concurrency 16: `--duration` seconds per server, in `--segments`
   alternating slices;
5. what prediction intervals cost (a calibrated artifact only): at concurrency 1 against the
   default server, requests without levels and with `"levels": [80, 95]`, alternating within
   each round, and the same pair in process (`predict` vs `predict(levels=...)`); the ratio
   of the p50s is the price (target: at most 1.10).

`--levels-only` measures step 5 alone (one server, a few minutes) and writes
`results_levels.json` unless `--out` says otherwise. `--batch N` measures `/forecast_batch`
alone (`batch.py`: one default server, each request N different test windows; windows/s and
request latency at concurrency 16, single-window requests to the same server in alternating
slices, and one batch request against the in-process `predict_batch` of its windows) and
writes `results_batch.json` unless `--out` says otherwise. `harness.py` holds what the modes
share (servers, load generator, statistics, the machine).

Every non-2xx answer is counted. The servers run on 127.0.0.1 with a private BENTOML_HOME in
which the artifact is registered and promoted, as the pipeline does it.

    LLATA_HOME=.llata HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving/bench.py \\
        --artifact /tmp/serve_model --out benchmarks/serving/results.json
    ... bench.py --artifact /tmp/serve_model --levels-only   # intervals' price alone
    ... bench.py --artifact /tmp/serve_model --batch 16      # /forecast_batch, 16 windows
    ... bench.py --artifact /tmp/serve_model --batch 16 --body both   # JSON and .npy bodies
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import torch

if not __package__:
    # Run as `python benchmarks/serving/bench.py`: the repository root makes this script's
    # sibling modules importable as `benchmarks.serving.*`.
    sys.path.append(str(Path(__file__).resolve().parents[2]))

from benchmarks.serving.batch import batch_mode  # noqa: E402
from benchmarks.serving.harness import (  # noqa: E402
    ETTH1,
    TEST_START,
    ServerProcess,
    Target,
    busy_processes,
    finish,
    interleaved,
    load_slice,
    load_values,
    machine,
    post,
    start_server,
    stats,
    throughput,
)
from llata_core.backbone import prepare_backbone  # noqa: E402
from llata_core.forecaster import Forecaster  # noqa: E402
from llata_core.jobs import evaluate_forecaster  # noqa: E402
from llata_core.model import LlataModel  # noqa: E402

log = logging.getLogger("bench.serving")
LEVELS = [80, 95]
SERVERS = {
    "batching_on": {},
    "batching_off": {"LLATA_BATCHING": "0"},
    "batching_on_1_worker": {"LLATA_WORKERS": "1"},
    "batching_on_fp32": {"LLATA_PRECISION": "fp32"},
}


# --------------------------------------------------------------------------- in process


def in_process(artifact: Path, values: np.ndarray, rounds: int) -> dict[str, Any]:
    served = Forecaster.load(artifact, precision="auto")  # what the service loads
    fp32 = Forecaster.load(artifact, precision="fp32")
    window = values[TEST_START - fp32.input_size : TEST_START]
    x = torch.from_numpy(fp32.scaler.transform(window[None]))  # [1, L, M], scaled
    cfg = fp32.config
    fns = {
        "forecaster_predict": lambda: served.predict(window),
        "forecaster_predict_fp32": lambda: fp32.predict(window),
        "student_forward": lambda: served.model(x),
        "student_forward_fp32": lambda: fp32.model(x),
    }
    full = None
    if cfg.model.kind == "llata":  # a baseline has one branch: nothing to compare it with
        full = LlataModel(cfg, prepare_backbone(cfg.model)).eval()
        fns["two_branch_forward_fp32"] = lambda: full(x, distill=True)
    with torch.inference_mode():
        for fn in fns.values():
            for _ in range(5):
                fn()
        times = interleaved(fns, rounds)
    out: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "precision": served.precision,
        "model_kind": cfg.model.kind,
        "input_size": cfg.data.input_size,
    }
    out.update({name: stats(t) for name, t in times.items()})
    out["student_params"] = sum(p.numel() for p in fp32.model.parameters())
    if full is not None:
        two = np.asarray(times["two_branch_forward_fp32"])
        ratio = two / np.asarray(times["student_forward_fp32"])
        out["two_branch_over_student_median_ratio"] = round(float(np.median(ratio)), 2)
        out["two_branch_params"] = sum(p.numel() for p in full.parameters())

    # The model's own batched throughput: the ceiling for any server on this machine.
    for size in (16, 32, 64):
        batch = np.repeat(window[None], size, axis=0)
        t = interleaved(
            {
                "served": lambda batch=batch: served.predict_batch(batch),
                "fp32": lambda batch=batch: fp32.predict_batch(batch),
            },
            max(rounds // 20, 5),
        )
        out[f"predict_batch{size}"] = {
            name: {**stats(v), "windows_per_s": round(size / float(np.median(v)), 1)}
            for name, v in t.items()
        }

    # What the served precision costs in accuracy: the whole ETTh1 test split, scaled units.
    accuracy: dict[str, float | int] = {}
    for name, fc in (("served", served), ("fp32", fp32)):
        metrics, _ = evaluate_forecaster(fc)
        accuracy[f"test_mse_{name}"] = round(metrics.mse, 6)
        accuracy[f"test_mae_{name}"] = round(metrics.mae, 6)
        accuracy["windows"] = metrics.n_windows
    out["accuracy"] = accuracy
    return out


# --------------------------------------------------------------------------- servers


async def latency_rounds(
    servers: list[ServerProcess], predict: Callable[[], object], body: bytes, rounds: int
) -> dict[str, Any]:
    """Concurrency 1: each round times one in-process predict and one request per server."""
    times: dict[str, list[float]] = {"in_process": [], **{s.label: [] for s in servers}}
    non_2xx = {s.label: 0 for s in servers}
    async with aiohttp.ClientSession() as session:
        for s in servers:  # warm each server (and the dispatcher's first timed calls)
            for _ in range(30):
                await post(session, f"{s.url}/forecast", body)
        order: list[ServerProcess | None] = [None, *servers]
        for r in range(rounds):
            for target in order[r % len(order) :] + order[: r % len(order)]:
                start = time.perf_counter()
                if target is None:
                    predict()
                else:
                    status = await post(session, f"{target.url}/forecast", body)
                    non_2xx[target.label] += not 200 <= status < 300
                elapsed = time.perf_counter() - start
                times["in_process" if target is None else target.label].append(elapsed)
    out: dict[str, Any] = {name: stats(t) for name, t in times.items()}
    base = np.asarray(times["in_process"])
    for s in servers:
        out[s.label]["non_2xx"] = non_2xx[s.label]
        overhead = np.asarray(times[s.label]) - base
        out[s.label]["overhead_vs_in_process_median_ms"] = round(
            float(np.median(overhead)) * 1e3, 2
        )
        out[s.label]["ratio_to_in_process_p50"] = round(
            out[s.label]["p50_ms"] / out["in_process"]["p50_ms"], 2
        )
    return out


async def levels_latency(
    server: ServerProcess,
    predict: Callable[[], object],
    predict_levels: Callable[[], object],
    body: bytes,
    body_levels: bytes,
    rounds: int,
) -> dict[str, Any]:
    """Concurrency 1, one server: a request without levels and one with LEVELS per round (in
    alternating order), and the same pair in process, so both see the same machine state."""
    url = f"{server.url}/forecast"
    times: dict[str, list[float]] = {
        name: [] for name in ("plain", "levels", "in_process_plain", "in_process_levels")
    }
    non_2xx = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(30):  # warm the server, with and without levels
            for b in (body, body_levels):
                await post(session, url, b)
        for r in range(rounds):
            pair = [("plain", body), ("levels", body_levels)]
            for name, b in pair if r % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                status = await post(session, url, b)
                times[name].append(time.perf_counter() - start)
                non_2xx += not 200 <= status < 300
            calls = [("in_process_plain", predict), ("in_process_levels", predict_levels)]
            for name, fn in calls if r % 2 == 0 else calls[::-1]:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    out: dict[str, Any] = {
        "server": server.label,
        "levels_asked": LEVELS,
        "request_bytes": {"plain": len(body), "levels": len(body_levels)},
        "non_2xx": non_2xx,
        **{name: stats(t) for name, t in times.items()},
    }
    for where in ("", "in_process_"):
        plain, levels = out[f"{where}plain"]["p50_ms"], out[f"{where}levels"]["p50_ms"]
        paired = np.asarray(times[f"{where}levels"]) / np.asarray(times[f"{where}plain"])
        out[f"{where}levels_over_plain_p50"] = round(levels / plain, 3)
        out[f"{where}levels_over_plain_median_paired_ratio"] = round(float(np.median(paired)), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, required=True, help="ETTh1 model artifact dir")
    parser.add_argument("--data", type=Path, default=ETTH1)
    parser.add_argument("--rounds", type=int, default=300, help="latency rounds (c=1)")
    parser.add_argument("--inproc-rounds", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per server")
    parser.add_argument("--segments", type=int, default=3, help="alternating slices")
    parser.add_argument("--torch-threads", type=int, default=None, help="default: the service's")
    parser.add_argument(
        "--levels-only",
        action="store_true",
        help="only what intervals cost: one server, plain vs levels requests (step 5)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="only /forecast_batch: one server, each request N windows (step 6)",
    )
    parser.add_argument(
        "--body",
        choices=("json", "npy", "both"),
        default="json",
        help="with --batch: JSON bodies, .npy bodies (/forecast_batch.npy), or both side by side",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: results.json, results_levels.json with --levels-only, "
        "results_batch.json with --batch",
    )
    args = parser.parse_args()
    if args.levels_only and args.batch is not None:
        parser.error("--levels-only and --batch are separate runs")
    if args.batch is not None and args.batch < 1:
        parser.error("--batch needs at least one window a request")
    if args.out is None:
        name = "results.json"
        if args.levels_only:
            name = "results_levels.json"
        elif args.batch is not None:
            name = "results_batch.json"
        args.out = Path(__file__).with_name(name)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.monotonic()
    # Usable cores - 1 (at least 1) unless told otherwise: the service's default for one
    # worker, and for one worker per core on 2 cores. The in-process numbers use the same
    # count so the overhead ratio compares like with like.
    threads = args.torch_threads or max(1, len(os.sched_getaffinity(0)) - 1)
    torch.set_num_threads(threads)

    result: dict[str, Any] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "torch_threads": threads,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "busy_processes_before": busy_processes(),
    }
    fc = Forecaster.load(args.artifact, precision="auto")  # as the service loads it
    if args.levels_only and fc.intervals is None:
        parser.error(f"{args.artifact} has no intervals: run `llata calibrate --model` on it")
    values = load_values(args.data, fc.channels)
    window = values[TEST_START - fc.input_size : TEST_START]
    body = json.dumps({"history": window.tolist()}).encode()
    body_levels = json.dumps({"history": window.tolist(), "levels": LEVELS}).encode()
    described = fc.describe()
    result["model"] = {
        "artifact": str(args.artifact),
        **{
            k: described[k]
            for k in ("backbone", "n_layers", "precision", "input_size", "horizon", "metrics")
        },
        "channels": len(fc.channels),
        "request_bytes": len(body),
        "intervals": described["intervals"],
    }
    if args.batch is not None:
        summary = batch_mode(fc, args.artifact, values, threads, args, result)
        finish(result, args.out, t0, summary)
        return

    if not args.levels_only:
        log.info("in-process measurements (%d torch threads)", threads)
        result["in_process"] = in_process(args.artifact, values, args.inproc_rounds)

    with tempfile.TemporaryDirectory(prefix="llata-serving-bench-") as tmp:
        workdir = Path(tmp)
        servers: list[ServerProcess] = []
        try:
            for label, extra in SERVERS.items():
                if args.levels_only and label != "batching_on":
                    continue
                env = {"LLATA_POLL_SECONDS": "5", "LLATA_TORCH_THREADS": str(threads), **extra}
                # One at a time: start-ups compete for CPU.
                servers.append(start_server(label, args.artifact, workdir, env))
            if fc.intervals is not None:
                log.info("levels %s against none at concurrency 1: %d rounds", LEVELS, args.rounds)
                result["latency_levels_c1"] = asyncio.run(
                    levels_latency(
                        servers[0],
                        lambda: fc.predict(window),
                        lambda: fc.predict(window, levels=LEVELS),
                        body,
                        body_levels,
                        args.rounds,
                    )
                )
            if args.levels_only:
                finish(result, args.out, t0, levels_summary(result))
                return
            log.info("latency at concurrency 1: %d rounds", args.rounds)
            result["latency_c1"] = asyncio.run(
                latency_rounds(servers, lambda: fc.predict(window), body, args.rounds)
            )
            # Warm-up for the load: BentoML's dispatcher times its first batches (one, two,
            # three windows) before it batches freely.
            for s in servers:
                asyncio.run(load_slice(f"{s.url}/forecast", body, args.concurrency, 5))
            log.info("throughput at concurrency %d", args.concurrency)
            result["throughput"] = throughput(
                [Target(s.label, s, "/forecast", body) for s in servers],
                args.concurrency,
                args.duration,
                args.segments,
            )
            result["servers"] = {
                s.label: {"env": s.env, "command": shlex.join(s.command)} for s in servers
            }
        finally:
            for s in servers:
                s.stop()

    lat, thr, ip = result["latency_c1"], result["throughput"], result["in_process"]
    summary = {
        "p50_ms_c1": lat["batching_on"]["p50_ms"],
        "p99_ms_c1": lat["batching_on"]["p99_ms"],
        "in_process_predict_p50_ms": lat["in_process"]["p50_ms"],
        "server_overhead_median_ms": lat["batching_on"]["overhead_vs_in_process_median_ms"],
        "server_over_in_process_p50": lat["batching_on"]["ratio_to_in_process_p50"],
        "windows_per_s_c16_batching_on": thr["batching_on"]["windows_per_s"],
        "windows_per_s_c16_batching_off": thr["batching_off"]["windows_per_s"],
        "windows_per_s_c16_batching_on_1_worker": thr["batching_on_1_worker"]["windows_per_s"],
        "windows_per_s_c16_batching_on_fp32": thr["batching_on_fp32"]["windows_per_s"],
        "mean_batch_c16": thr["batching_on"]["mean_batch"],
        "non_2xx_total": sum(v["non_2xx"] for v in thr.values())
        + sum(lat[k]["non_2xx"] for k in SERVERS),
        "two_branch_over_student": ip.get("two_branch_over_student_median_ratio"),
        "model_kind": ip["model_kind"],
        "input_size": ip["input_size"],
        "served_precision": ip["precision"],
        **ip["accuracy"],
        **levels_summary(result),
    }
    finish(result, args.out, t0, summary)


def levels_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The price of intervals, when the artifact has them."""
    levels = result.get("latency_levels_c1")
    if levels is None:
        return {}
    return {
        "p50_ms_c1_plain": levels["plain"]["p50_ms"],
        "p50_ms_c1_levels_80_95": levels["levels"]["p50_ms"],
        "levels_over_plain_p50": levels["levels_over_plain_p50"],
        "levels_over_plain_median_paired_ratio": levels["levels_over_plain_median_paired_ratio"],
        "in_process_levels_over_plain_p50": levels["in_process_levels_over_plain_p50"],
        "levels_non_2xx": levels["non_2xx"],
    }


if __name__ == "__main__":
    main()
