"""The Prefect runtime of a `llata pipeline` command: local defaults, one API server for
the whole run (its candidate workers included), and a flow run to its summary or failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any


def configure_environment() -> None:
    """Local-only defaults, set before Prefect is imported (it reads them once).

    No telemetry from the client, the temporary server or BentoML, and the library
    loggers forwarded to the Prefect run logs.
    """
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "llata_core,features,flows,serving")
    # The summary after the run logs outside any flow run; that is not an error.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The temporary API server of a run without PREFECT_API_URL starts in ~5 s on an idle
    # machine; on a busy 2-core one (training beside it) Prefect's 20 s default ran out.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_PrefectRunNames())


@contextlib.contextmanager
def prefect_api() -> Iterator[None]:
    """The Prefect API of a run: `PREFECT_API_URL` if set, else one temporary local server.

    Prefect would start a temporary server by itself, but only for this process: each
    candidate's worker process would then start its own. One server, whose address the
    workers inherit through the environment, serves them all.
    """
    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
            _drain_clients()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _drain_clients(timeout: float = 30.0) -> None:
    """Send the run logs and events still queued while the server is up.

    Left queued, Prefect's background workers send them at interpreter exit to the server
    that has stopped by then, print "Error logging to API" and retry: `llata pipeline run`
    sat for about a minute after its summary.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout, at_exit=False)


class _PrefectRunNames(logging.Filter):
    """Name the flow or task run in Prefect's lines.

    `llata` configures the root handler before Prefect is imported, so Prefect keeps it
    (and its format) instead of installing its own console handler; Prefect's run loggers
    then print "Finished in state Completed()" without saying which task finished.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        if run and record.name.startswith("prefect."):
            record.name = f"{record.name.removeprefix('prefect.')}[{run}]"
        return True


def run_flow(
    run: Callable[..., Any], request: object, what: str, summary: Callable[[Any, float], None]
) -> int:
    """Run a flow against the run's Prefect API; print its summary, or why it failed (1)."""
    start = time.perf_counter()
    # The summary logs too (loading the production model): the API stays up until it is
    # printed, or Prefect's log handler reports a failed connection at exit.
    with prefect_api():
        state = run(request, return_state=True)
        seconds = time.perf_counter() - start
        if not state.is_completed():
            print(f"\nllata: {what} failed after {seconds:.0f}s: {state.message}", file=sys.stderr)
            print("production model unchanged.", file=sys.stderr)
            return 1
        summary(state.result(), seconds)
    return 0
