"""Candidate worker processes end with the flow process that started them.

A process-pool worker trains its candidate to the end even after the flow run that submitted
it is gone. A cancelled flow run (Prefect's cancellation terminates the flow's process), a
timed-out one or one killed for memory would leave hours of training behind, holding the
cores or the GPU that the next scheduled run needs. So each worker watches its parent: once
the parent has exited, the worker is re-parented (its parent pid changes), and it terminates
itself. Nothing it was writing is lost that was kept: a candidate's artifact is saved
atomically, and production is only touched by the flow after every candidate is back.
"""

from __future__ import annotations

import os
import signal
import threading
import time

WATCHER_THREAD = "exit-with-parent"
POLL_SECONDS = 0.5
# SIGTERM first, so that a handler the worker installed can run; SIGKILL if it is still
# alive this much later.
KILL_AFTER_SECONDS = 10.0


def exit_with_parent(
    parent: int | None = None,
    poll_seconds: float = POLL_SECONDS,
    kill_after_seconds: float = KILL_AFTER_SECONDS,
) -> None:
    """A process-pool initializer: a daemon thread ends this process once its parent exits.

    Args:
        parent: The pid of the process that built the pool (`os.getpid()` there, passed in
            the pool's `initargs`); a worker whose parent is already another process ends at
            once. None takes the parent pid at the worker's start.
        poll_seconds: How often the thread compares the parent pid with `parent`.
        kill_after_seconds: How long after SIGTERM the process is sent SIGKILL.
    """
    if parent is None:
        parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(kill_after_seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=WATCHER_THREAD, daemon=True).start()
