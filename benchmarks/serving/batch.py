"""The serving benchmark's batch mode (``bench.py --batch N``): ``POST /forecast_batch``.

One server with the service's defaults (adaptive batching on, one worker per core, ``auto``
precision), its LLATA_MAX_WINDOWS and LLATA_MAX_REQUEST_BYTES raised where N windows need
it (the defaults are 64 windows and 1 MiB; 16 ETTh1 windows of 512 x 7 values written with
17 digits take 1.1 MB). Each request carries the first N test windows. Against it:

1. a check: one batch request answers what the in-process ``predict_batch`` of its windows
   does (the largest difference is recorded);
2. latency at concurrency 1: rounds of one batch request and one in-process
   ``predict_batch`` of the same N windows, in alternating order;
3. throughput at ``--concurrency`` (16): ``--duration`` seconds of batch requests and as many
   of single-window ``/forecast`` requests to the same server, in ``--segments`` alternating
   slices: windows/s, request latency, model calls and their mean batch; and the batch
   windows/s against the in-process ``predict_batch`` of N windows (the model's own rate).

The target: at least 1,000 windows/s at 16 clients on 2 cores for the default production
model (DLinear, lookback 512, 7 channels, horizon 96).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import requests

from benchmarks.serving.harness import (
    TEST_START,
    ServerProcess,
    Target,
    load_slice,
    post,
    start_server,
    stats,
    throughput,
)
from llata_core.forecaster import Forecaster

log = logging.getLogger("bench.serving")
TARGET_WINDOWS_PER_S = 1000


def batch_mode(
    fc: Forecaster,
    artifact: Path,
    values: np.ndarray,
    threads: int,
    args: argparse.Namespace,
    result: dict[str, Any],
) -> dict[str, Any]:
    """Runs the batch mode's measurements into ``result``; returns their summary.

    Args:
        fc: The artifact, loaded as the service loads it (``precision="auto"``).
        artifact: Its directory (registered and promoted for the server).
        values: The data's rows, ``[T, M]``, channels in the model's order.
        threads: Torch threads, in process and per server worker.
        args: ``bench.py``'s arguments (``batch``, ``rounds``, ``concurrency``,
            ``duration``, ``segments``).
        result: The run's record; the measurements are added to it.
    """
    n = int(args.batch)
    # The first n test forecasts' inputs: n different windows.
    windows = np.stack([values[TEST_START - fc.input_size + i : TEST_START + i] for i in range(n)])
    body = json.dumps({"windows": [{"history": w.tolist()} for w in windows]}).encode()
    single = json.dumps({"history": windows[0].tolist()}).encode()
    env = {
        "LLATA_POLL_SECONDS": "5",
        "LLATA_TORCH_THREADS": str(threads),
        "LLATA_MAX_WINDOWS": str(max(n, 64)),
        "LLATA_MAX_REQUEST_BYTES": str(max(1 << 20, 2 * len(body))),
    }
    result["batch"] = {
        "windows_per_request": n,
        "request_bytes": len(body),
        "single_request_bytes": len(single),
    }
    label = f"batch_{n}"
    with tempfile.TemporaryDirectory(prefix="llata-serving-bench-") as tmp:
        server = start_server("batching_on", artifact, Path(tmp), env)
        try:
            result["batch"]["check"] = _check(server, body, fc.predict_batch(windows))
            log.info("batch of %d against in process at concurrency 1: %d rounds", n, args.rounds)
            result["latency_batch_c1"] = asyncio.run(
                _latency(server, lambda: fc.predict_batch(windows), body, args.rounds)
            )
            targets = [
                Target(label, server, "/forecast_batch", body, n),
                Target("single", server, "/forecast", single),
            ]
            # Warm-up for the load: BentoML's dispatcher times its first batches before it
            # batches freely.
            for t in targets:
                warm = min(5.0, args.duration)
                asyncio.run(load_slice(f"{server.url}{t.path}", t.body, args.concurrency, warm))
            log.info("throughput at concurrency %d", args.concurrency)
            result["throughput"] = throughput(
                targets, args.concurrency, args.duration, args.segments
            )
            result["servers"] = {
                server.label: {"env": server.env, "command": shlex.join(server.command)}
            }
        finally:
            server.stop()

    lat = result["latency_batch_c1"]
    batch, one = result["throughput"][label], result["throughput"]["single"]
    in_process_windows_per_s = n / (lat["in_process"]["p50_ms"] / 1e3)
    return {
        "windows_per_request": n,
        "concurrency": args.concurrency,
        "windows_per_s_batch": batch["windows_per_s"],
        "windows_per_s_single": one["windows_per_s"],
        "batch_over_single_windows_per_s": round(batch["windows_per_s"] / one["windows_per_s"], 2),
        "target_windows_per_s": TARGET_WINDOWS_PER_S,
        "target_met": batch["windows_per_s"] >= TARGET_WINDOWS_PER_S,
        "request_p50_ms_batch": batch["latency"]["p50_ms"],
        "request_p99_ms_batch": batch["latency"]["p99_ms"],
        "mean_model_batch": batch["mean_batch"],
        "in_process_predict_batch_windows_per_s": round(in_process_windows_per_s, 1),
        "batch_windows_per_s_over_in_process": round(
            batch["windows_per_s"] / in_process_windows_per_s, 3
        ),
        "p50_ms_c1_batch_request": lat["batch_request"]["p50_ms"],
        "p99_ms_c1_batch_request": lat["batch_request"]["p99_ms"],
        "in_process_predict_batch_p50_ms": lat["in_process"]["p50_ms"],
        "batch_request_over_in_process_p50": lat["batch_request_over_in_process_p50"],
        "max_abs_diff_vs_in_process": result["batch"]["check"]["max_abs_diff"],
        "non_2xx_total": batch["non_2xx"] + one["non_2xx"] + lat["non_2xx"],
        "served_precision": fc.precision,
        "avx512_bf16": result["machine"]["avx512_bf16"],
    }


def _check(server: ServerProcess, body: bytes, expected: np.ndarray) -> dict[str, Any]:
    """One batch request: its forecasts against the in-process ones (``[N, horizon, M]``).

    Raises:
        RuntimeError: The server did not answer 200 with one forecast per window.
    """
    r = requests.post(
        f"{server.url}/forecast_batch",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    if r.status_code != 200:
        raise RuntimeError(f"/forecast_batch answered {r.status_code}: {r.text[:500]}")
    answer = r.json()
    got = np.array([f["forecast"] for f in answer["forecasts"]])
    if got.shape != expected.shape:
        raise RuntimeError(f"/forecast_batch answered {got.shape}, expected {expected.shape}")
    return {
        "model_version": answer["model_version"],
        "max_abs_diff": float(np.abs(got - expected).max()),
    }


async def _latency(
    server: ServerProcess, predict: Callable[[], object], body: bytes, rounds: int
) -> dict[str, Any]:
    """Concurrency 1: per round one batch request and one in-process ``predict_batch`` of the
    same windows, in alternating order, so both see the same machine state."""
    url = f"{server.url}/forecast_batch"
    times: dict[str, list[float]] = {"batch_request": [], "in_process": []}
    non_2xx = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(10):  # warm the server and the in-process model
            await post(session, url, body)
            predict()
        for r in range(rounds):
            for name in list(times) if r % 2 == 0 else list(times)[::-1]:
                start = time.perf_counter()
                if name == "in_process":
                    predict()
                else:
                    non_2xx += not 200 <= await post(session, url, body) < 300
                times[name].append(time.perf_counter() - start)
    out: dict[str, Any] = {name: stats(t) for name, t in times.items()}
    paired = np.asarray(times["batch_request"]) / np.asarray(times["in_process"])
    out["non_2xx"] = non_2xx
    out["batch_request_over_in_process_p50"] = round(
        out["batch_request"]["p50_ms"] / out["in_process"]["p50_ms"], 2
    )
    out["batch_request_over_in_process_median_paired_ratio"] = round(float(np.median(paired)), 2)
    return out
