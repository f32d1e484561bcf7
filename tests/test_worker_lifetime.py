"""A candidate's worker process ends when the flow process that started it is killed.

Real processes: a parent Python process starts a spawn-context process pool with
`flows.worker_lifetime.exit_with_parent` as its initializer, as the retrain flow's process
runner does, and hands the worker a minute-long task; the test kills the parent with SIGKILL
(no cleanup can run in it) and waits for the worker to go.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

PARENT = """
import multiprocessing, sys, time
from concurrent.futures import ProcessPoolExecutor
from flows.worker_lifetime import exit_with_parent, WATCHER_THREAD
import os, threading

def report():
    return os.getpid(), [t.name for t in threading.enumerate()]

if __name__ == "__main__":
    watch = sys.argv[1] == "watch"
    pool = ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=exit_with_parent if watch else None,
        initargs=(os.getpid(), 0.05, 5.0) if watch else (),
    )
    pid, threads = pool.submit(report).result()
    print(pid, WATCHER_THREAD in threads, flush=True)
    pool.submit(time.sleep, 60)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running, not a zombie that nobody has reaped yet (the container's init may not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _start_parent(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], int, bool]:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, env=env
    )
    assert parent.stdout is not None
    line = parent.stdout.readline().split()
    assert len(line) == 2, f"the parent printed {line!r}"
    return parent, int(line[0]), line[1] == "True"


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


@pytest.mark.skipif(sys.platform != "linux", reason="re-parenting as Linux does it")
def test_a_worker_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent, worker, watched = _start_parent(tmp_path, "watch")
    try:
        assert watched, "the initializer started no watcher thread in the worker"
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _wait_gone(worker, 30), f"worker {worker} outlived its killed parent"
    finally:
        parent.kill()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.skipif(sys.platform != "linux", reason="re-parenting as Linux does it")
@pytest.mark.skipif(sys.platform != "linux", reason="re-parenting as Linux does it")
def test_a_worker_whose_parent_died_before_its_initializer_ends() -> None:
    """The parent pid comes from the process that built the pool: a worker that starts after
    that process is gone (re-parented before the initializer ran) ends at once instead of
    watching its new parent."""
    code = (
        "import time\n"
        "from flows.worker_lifetime import exit_with_parent\n"
        "exit_with_parent(parent=1, poll_seconds=0.05, kill_after_seconds=5.0)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        assert worker.wait(timeout=30) == -signal.SIGTERM
    finally:
        worker.kill()


def test_without_the_watcher_a_worker_outlives_its_parent(tmp_path: Path) -> None:
    """The control: what the flow's process runner did before, a worker training on with
    nobody to report to."""
    parent, worker, watched = _start_parent(tmp_path, "plain")
    try:
        assert not watched
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        time.sleep(1.0)  # 20 of the watcher's polls
        assert _alive(worker)
    finally:
        parent.kill()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)
