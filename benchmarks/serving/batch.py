"""The serving benchmark's batch mode (``bench.py --batch N``): ``POST /forecast_batch``.

One server with the service's defaults (adaptive batching on, one worker per core, ``auto``
precision), its LLATA_MAX_WINDOWS and LLATA_MAX_REQUEST_BYTES raised where N windows need
it (the defaults are 64 windows and 1 MiB; 16 ETTh1 windows of 512 x 7 values written with
17 digits take 1.1 MB). Each request carries the first N test windows. Against it:

``--body`` says how the windows are sent: ``json`` (``/forecast_batch``), ``npy`` (one
``np.save`` array of the same float64 values to ``/forecast_batch.npy``) or ``both``, side by
side against the same server. Against it:

1. a check: one batch request (of each body) answers what the in-process ``predict_batch`` of
   its windows does (the largest difference is recorded);
2. latency at concurrency 1: rounds of one batch request of each body and one in-process
   ``predict_batch`` of the same N windows, in rotating order;
3. throughput at ``--concurrency`` (16): ``--duration`` seconds of batch requests of each
   body and as many of single-window ``/forecast`` requests to the same server, in
   ``--segments`` alternating slices: windows/s, request latency, model calls and their mean
   batch; the batch windows/s against the in-process ``predict_batch`` of N windows (the
   model's own rate), and with ``both`` the ratio npy/JSON, over the run and slice by slice
   (neighbouring slices share the machine's state).

The target: at least 1,000 windows/s at 16 clients on 2 cores for the default production
model (DLinear, lookback 512, 7 channels, horizon 96).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import requests

from benchmarks.serving.harness import (
    JSON,
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
from serving.npy import NPY_MEDIA_TYPE, NPY_PATH

log = logging.getLogger("bench.serving")
TARGET_WINDOWS_PER_S = 1000


@dataclass(frozen=True)
class Body:
    """One way to send the N windows: JSON to ``/forecast_batch`` or ``.npy`` to
    ``/forecast_batch.npy``."""

    kind: str
    path: str
    body: bytes
    media_type: str


def bodies(windows: np.ndarray, kinds: list[str]) -> list[Body]:
    """The request of each kind, all carrying the same float64 values."""
    out = []
    for kind in kinds:
        if kind == "json":
            text = json.dumps({"windows": [{"history": w.tolist()} for w in windows]})
            out.append(Body(kind, "/forecast_batch", text.encode(), JSON))
        else:
            buffer = io.BytesIO()
            np.save(buffer, windows)
            out.append(Body(kind, NPY_PATH, buffer.getvalue(), NPY_MEDIA_TYPE))
    return out


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
        args: ``bench.py``'s arguments (``batch``, ``body``, ``rounds``, ``concurrency``,
            ``duration``, ``segments``).
        result: The run's record; the measurements are added to it.
    """
    n = int(args.batch)
    kinds = ["json", "npy"] if args.body == "both" else [args.body]
    # The first n test forecasts' inputs: n different windows.
    windows = np.stack([values[TEST_START - fc.input_size + i : TEST_START + i] for i in range(n)])
    requests_ = bodies(windows.astype(np.float64), kinds)
    single = json.dumps({"history": windows[0].tolist()}).encode()
    env = {
        "LLATA_POLL_SECONDS": "5",
        "LLATA_TORCH_THREADS": str(threads),
        "LLATA_MAX_WINDOWS": str(max(n, 64)),
        "LLATA_MAX_REQUEST_BYTES": str(max(1 << 20, 2 * max(len(b.body) for b in requests_))),
    }
    result["batch"] = {
        "windows_per_request": n,
        "bodies": kinds,
        "request_bytes": {b.kind: len(b.body) for b in requests_},
        "single_request_bytes": len(single),
    }
    labels = {b.kind: f"batch_{n}" + ("" if b.kind == "json" else f"_{b.kind}") for b in requests_}
    with tempfile.TemporaryDirectory(prefix="llata-serving-bench-") as tmp:
        server = start_server("batching_on", artifact, Path(tmp), env)
        try:
            expected = fc.predict_batch(windows)
            result["batch"]["check"] = {b.kind: _check(server, b, expected) for b in requests_}
            log.info("batch of %d against in process at concurrency 1: %d rounds", n, args.rounds)
            result["latency_batch_c1"] = asyncio.run(
                _latency(server, lambda: fc.predict_batch(windows), requests_, args.rounds)
            )
            targets = [
                *(
                    Target(labels[b.kind], server, b.path, b.body, n, b.media_type)
                    for b in requests_
                ),
                Target("single", server, "/forecast", single),
            ]
            # Warm-up for the load: BentoML's dispatcher times its first batches before it
            # batches freely.
            for t in targets:
                warm = min(5.0, args.duration)
                url = f"{server.url}{t.path}"
                asyncio.run(load_slice(url, t.body, args.concurrency, warm, t.media_type))
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
    one = result["throughput"]["single"]
    in_process_windows_per_s = n / (lat["in_process"]["p50_ms"] / 1e3)
    summary: dict[str, Any] = {
        "windows_per_request": n,
        "concurrency": args.concurrency,
        "bodies": kinds,
        "windows_per_s_single": one["windows_per_s"],
        "target_windows_per_s": TARGET_WINDOWS_PER_S,
        "in_process_predict_batch_windows_per_s": round(in_process_windows_per_s, 1),
        "in_process_predict_batch_p50_ms": lat["in_process"]["p50_ms"],
    }
    for kind in kinds:
        batch = result["throughput"][labels[kind]]
        summary[kind] = {
            "windows_per_s_batch": batch["windows_per_s"],
            "batch_over_single_windows_per_s": round(
                batch["windows_per_s"] / one["windows_per_s"], 2
            ),
            "target_met": batch["windows_per_s"] >= TARGET_WINDOWS_PER_S,
            "request_bytes": len(next(b.body for b in requests_ if b.kind == kind)),
            "request_p50_ms_batch": batch["latency"]["p50_ms"],
            "request_p99_ms_batch": batch["latency"]["p99_ms"],
            "mean_model_batch": batch["mean_batch"],
            "server_over_in_process_windows_per_s": round(
                batch["windows_per_s"] / in_process_windows_per_s, 3
            ),
            "p50_ms_c1_batch_request": lat[f"{kind}_request"]["p50_ms"],
            "p99_ms_c1_batch_request": lat[f"{kind}_request"]["p99_ms"],
            "batch_request_over_in_process_p50": lat[f"{kind}_request_over_in_process_p50"],
            "max_abs_diff_vs_in_process": result["batch"]["check"][kind]["max_abs_diff"],
            "non_2xx": batch["non_2xx"],
        }
    if len(kinds) == 2:
        json_, npy = (summary[k] for k in kinds)
        summary["npy_over_json_windows_per_s"] = round(
            npy["windows_per_s_batch"] / json_["windows_per_s_batch"], 3
        )
        summary["npy_over_json_per_slice_windows_per_s"] = [
            round(b / a, 3)
            for a, b in zip(
                *(result["throughput"][labels[k]]["per_slice_windows_per_s"] for k in kinds),
                strict=True,
            )
        ]
        summary["npy_over_json_p50_c1"] = round(
            lat["npy_request"]["p50_ms"] / lat["json_request"]["p50_ms"], 3
        )
    summary["non_2xx_total"] = (
        one["non_2xx"] + lat["non_2xx"] + sum(summary[k]["non_2xx"] for k in kinds)
    )
    summary["served_precision"] = fc.precision
    summary["avx512_bf16"] = result["machine"]["avx512_bf16"]
    return summary


def _check(server: ServerProcess, body: Body, expected: np.ndarray) -> dict[str, Any]:
    """One batch request: its forecasts against the in-process ones (``[N, horizon, M]``).

    Raises:
        RuntimeError: The server did not answer 200 with one forecast per window.
    """
    r = requests.post(
        f"{server.url}{body.path}",
        data=body.body,
        headers={"Content-Type": body.media_type},
        timeout=60,
    )
    if r.status_code != 200:
        raise RuntimeError(f"{body.path} answered {r.status_code}: {r.text[:500]}")
    answer = r.json()
    got = np.array([f["forecast"] for f in answer["forecasts"]])
    if got.shape != expected.shape:
        raise RuntimeError(f"{body.path} answered {got.shape}, expected {expected.shape}")
    return {
        "model_version": answer["model_version"],
        "max_abs_diff": float(np.abs(got - expected).max()),
    }


async def _latency(
    server: ServerProcess, predict: Callable[[], object], sent: list[Body], rounds: int
) -> dict[str, Any]:
    """Concurrency 1: per round one batch request of each body and one in-process
    ``predict_batch`` of the same windows, in rotating order, so all see the same machine
    state."""
    times: dict[str, list[float]] = {f"{b.kind}_request": [] for b in sent}
    times["in_process"] = []
    by_name = {f"{b.kind}_request": b for b in sent}
    names = list(times)
    non_2xx = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(10):  # warm the server and the in-process model
            for b in sent:
                await post(session, f"{server.url}{b.path}", b.body, b.media_type)
            predict()
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                if name == "in_process":
                    predict()
                else:
                    b = by_name[name]
                    url = f"{server.url}{b.path}"
                    non_2xx += not 200 <= await post(session, url, b.body, b.media_type) < 300
                times[name].append(time.perf_counter() - start)
    out: dict[str, Any] = {name: stats(t) for name, t in times.items()}
    out["non_2xx"] = non_2xx
    for name in by_name:
        paired = np.asarray(times[name]) / np.asarray(times["in_process"])
        out[f"{name}_over_in_process_p50"] = round(
            out[name]["p50_ms"] / out["in_process"]["p50_ms"], 2
        )
        out[f"{name}_over_in_process_median_paired_ratio"] = round(float(np.median(paired)), 2)
    return out
