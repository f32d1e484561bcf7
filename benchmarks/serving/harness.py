"""What every mode of the serving benchmark (``bench.py``) shares: the ETTh1 windows, servers
started on a registered artifact, the load generator, timing statistics and the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pandas as pd
import requests
import torch

from serving.registry import Registry

log = logging.getLogger("bench.serving")
ROOT = Path(__file__).resolve().parents[2]
ETTH1 = ROOT.parent / "shared" / "data" / "ETTh1.csv.gz"
# ETTh1's standard split: 12/4/4 months of hours; the first test forecast starts here.
TEST_START = 12 * 30 * 24 + 4 * 30 * 24


def load_values(path: Path, channels: tuple[str, ...]) -> np.ndarray:
    return pd.read_csv(path).loc[:, list(channels)].to_numpy(np.float64)


def stats(seconds: list[float] | np.ndarray) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "n": int(ms.size),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Times each function once per round, rotating the order every round."""
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`bentoml serve` in its own process group (no --host: the service binds 127.0.0.1)."""

    def __init__(self, label: str, home: Path, workdir: Path, env: dict[str, str]) -> None:
        self.label = label
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            str(Path(sys.executable).with_name("bentoml")),
            "serve",
            "serving.service:Forecaster",
            "--port",
            str(self.port),
        ]
        self._log = (workdir / f"server-{label}.log").open("wb")
        self.proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env={
                **os.environ,
                "BENTOML_HOME": str(home),
                "BENTOML_DO_NOT_TRACK": "True",
                "HF_HUB_OFFLINE": "1",
                **env,
            },
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label}: bentoml serve exited with {self.proc.returncode}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return time.monotonic() - start
            time.sleep(0.5)
        raise TimeoutError(f"{self.label}: not ready after {timeout} s")

    def batch_stats(self) -> tuple[float, float]:
        """(model calls, windows) so far, from the service's `llata_batch_windows` histogram."""
        found = {"llata_batch_windows_count": 0.0, "llata_batch_windows_sum": 0.0}
        for line in requests.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name in found:
                found[name] += float(line.rsplit(" ", 1)[1])
        return found["llata_batch_windows_count"], found["llata_batch_windows_sum"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def start_server(label: str, artifact: Path, workdir: Path, env: dict[str, str]) -> ServerProcess:
    """Registers and promotes ``artifact`` in a BENTOML_HOME of its own, as the pipeline does,
    then starts a server on it and waits until it is ready.

    One BENTOML_HOME per server: BentoML keeps its Prometheus files under it and a second
    server on the same home wipes the first one's.
    """
    home = workdir / label
    registry = Registry(bentoml_home=home)
    tag = registry.register(artifact, metadata={"benchmark": "serving"})
    registry.promote(tag, score=None, margin=0.0, force=True)
    server = ServerProcess(label, home, workdir, env)
    try:
        startup = server.wait_ready()
    except BaseException:
        server.stop()
        raise
    log.info("%s ready in %.0f s", label, startup)
    return server


JSON = "application/json"


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, media_type: str = JSON
) -> int:
    async with session.post(url, data=body, headers={"Content-Type": media_type}) as r:
        await r.read()
        return r.status


async def load_slice(
    url: str, body: bytes, concurrency: int, seconds: float, media_type: str = JSON
) -> dict[str, Any]:
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        stop_at = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                try:
                    status = await post(session, url, body, media_type)
                except aiohttp.ClientError:
                    status = -1
                latencies.append(time.perf_counter() - start)
                statuses[status] = statuses.get(status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"wall": wall, "statuses": statuses, "latencies": latencies}


@dataclass(frozen=True)
class Target:
    """What one load slice sends: ``body`` (of ``media_type``) to ``server``'s ``path``,
    ``windows`` windows a request."""

    label: str
    server: ServerProcess
    path: str
    body: bytes
    windows: int = 1
    media_type: str = JSON


def throughput(
    targets: list[Target], concurrency: int, duration: float, segments: int
) -> dict[str, Any]:
    """Concurrency `concurrency`, `duration` s per target, in alternating slices; the model
    calls and windows each target's slices caused (from its server's batching histogram)."""
    runs: dict[str, list[dict[str, Any]]] = {t.label: [] for t in targets}
    batched = {t.label: np.zeros(2) for t in targets}  # (model calls, windows)
    for _ in range(segments):
        for t in targets:
            before = np.asarray(t.server.batch_stats())
            url = f"{t.server.url}{t.path}"
            runs[t.label].append(
                asyncio.run(load_slice(url, t.body, concurrency, duration / segments, t.media_type))
            )
            batched[t.label] += np.asarray(t.server.batch_stats()) - before
    out: dict[str, Any] = {}
    for t in targets:
        wall = sum(r["wall"] for r in runs[t.label])
        statuses: dict[int, int] = {}
        for r in runs[t.label]:
            for k, v in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
        calls, windows = (float(x) for x in batched[t.label])
        out[t.label] = {
            "path": t.path,
            "concurrency": concurrency,
            "windows_per_request": t.windows,
            "seconds": round(wall, 1),
            "windows_per_s": round(ok * t.windows / wall, 1),
            "requests_per_s": round(ok / wall, 1),
            "per_slice_windows_per_s": [
                round(
                    t.windows
                    * sum(v for k, v in r["statuses"].items() if 200 <= k < 300)
                    / r["wall"],
                    1,
                )
                for r in runs[t.label]
            ],
            "requests": sum(statuses.values()),
            "non_2xx": sum(statuses.values()) - ok,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "latency": stats([x for r in runs[t.label] for x in r["latencies"]]),
            "model_calls": calls,
            "mean_batch": round(windows / calls, 2) if calls else None,
        }
    return out


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def busy_processes() -> list[str]:
    """Processes using >= 5% CPU now (other than this one): the machine's contention."""
    lines = subprocess.run(
        ["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    out = []
    for line in lines[:10]:
        pcpu, pid, *args = line.split()
        if float(pcpu) >= 5.0 and int(pid) != os.getpid():
            out.append(f"{pcpu}% {' '.join(args)[:100]}")
    return out


def finish(result: dict[str, Any], out: Path, t0: float, summary: dict[str, Any]) -> None:
    result["summary"] = summary
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["busy_processes_after"] = busy_processes()
    result["wall_s"] = round(time.monotonic() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
