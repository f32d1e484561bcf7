"""Commands of the production pipeline, plugged into `llata` (entry-point group
`llata.commands`): `data pull`, `validate`, `features`, and
`pipeline run|recalibrate|train|evaluate|serve`.

Each command validates `params.yaml` once (`flows.params.load_pipeline_config`) and calls
one stage function (`flows.stages`, `flows.evaluate`, `flows.registry_stages`), the same
function the Prefect task of that step calls. `dvc.yaml` runs these commands, so DVC,
Prefect and a person at the shell share one implementation. Prefect, Feast, Great
Expectations and torch are imported inside the commands: `llata --help` stays fast and
`llata` configures logging before Prefect does.

Exit codes: 0 on success, 1 when the data or the run failed (with a message naming why),
2 for bad configuration (reported by `llata` itself).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flows.params import DEFAULT_PARAMS_FILE, PipelineConfig, load_pipeline_config

logger = logging.getLogger(__name__)

# Libraries whose INFO logs drown the pipeline's own (GX logs one line per decorated
# function at import; httpx one per Prefect API call).
_NOISY_LOGGERS = ("great_expectations", "feast", "httpx", "dvc", "numexpr", "urllib3")


def add(subparsers: argparse._SubParsersAction) -> None:
    """Add `data`, `validate`, `features` and `pipeline` to the `llata` command line.

    Args:
        subparsers: What `ArgumentParser.add_subparsers()` returned.
    """
    _quiet_libraries()  # before any command imports them
    p = subparsers.add_parser("data", help="raw data under DVC")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser(
        "pull",
        help="fill data/raw from the DVC remote, the canonical URL or the mirror",
        description=(
            "Fetch the raw data from, in order: the configured DVC remote, the dataset's "
            "canonical URL, $LLATA_DATA_MIRROR, the copy shipped in the package (ETTh1); "
            "every copy checksum-verified. With --allow-synthetic, when none answers, write "
            "the synthetic series (loudly; recorded in the model)."
        ),
    )
    _common(q, profile=False)
    q.add_argument("--force", action="store_true", help="fetch even if the file exists")
    q.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="write generated data when no source answers (default: fail)",
    )
    q.set_defaults(func=cmd_data_pull)

    p = subparsers.add_parser(
        "validate",
        help="run the Great Expectations suite on data/raw (reports/validation) or on PATH",
        description=(
            "Read a data file with LLaTA's reader and run the Great Expectations suite of "
            "params.yaml (pipeline.validation, data.timestamp_column, the split's minimum "
            "rows). Without PATH: the pipeline's raw file, report in reports/validation/. "
            "Exit code 0: valid; 1: unreadable or invalid (the message names lines and "
            "columns); 2: bad configuration."
        ),
    )
    _common(p, profile=False)
    p.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="any CSV (.csv, .csv.gz) or parquet (.parquet, .pq) file, inside the project or not",
    )
    p.add_argument(
        "--report-dir",
        type=Path,
        help="with PATH: write validation.json and Data Docs here (default: no files)",
    )
    p.set_defaults(func=cmd_validate)

    p = subparsers.add_parser(
        "features", help="build the Feast repo and the point-in-time training frame"
    )
    _common(p, profile=False)
    p.set_defaults(func=cmd_features)

    p = subparsers.add_parser("pipeline", help="the production pipeline (Prefect, DVC stages)")
    psub = p.add_subparsers(dest="pipeline_command", required=True)
    q = psub.add_parser(
        "run",
        help="run the retrain flow end to end (quick profile by default)",
        description="validate -> features -> train -> evaluate -> register -> promote",
    )
    _common(q, profile=True, default_profile="quick")
    q.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="train on generated data when no real data is reachable (default: fail)",
    )
    q.add_argument(
        "--force",
        action="store_true",
        help=(
            "promote the winner without comparing it to production, across data lineages "
            "(recorded in the registry history); never generated data over real data"
        ),
    )
    q.set_defaults(func=cmd_pipeline_run)
    q = psub.add_parser(
        "recalibrate",
        help="run the recalibrate flow: production's intervals on the newest data",
        description=(
            "Recalibrate a copy of the production model's conformal scores on the newest "
            "windows of pipeline.raw_data (pipeline.recalibration: recent_windows, "
            "holdout_windows), register it as a new version (a recalibration of production), "
            "and promote it if its holdout coverage is at least as close to nominal as "
            "production's on the same windows."
        ),
    )
    _common(q, profile=False)
    q.set_defaults(func=cmd_pipeline_recalibrate)
    q = psub.add_parser(
        "backbone", help="DVC stage: cache the backbone of every LLaTA candidate (once)"
    )
    _common(q, profile=True)
    q.set_defaults(func=cmd_pipeline_backbone)
    q = psub.add_parser(
        "train", help="DVC stage: train every candidate on the training frame, then select"
    )
    _common(q, profile=True)
    q.set_defaults(func=cmd_pipeline_train)
    q = psub.add_parser("evaluate", help="DVC stage: metrics.json, forecast and loss plots")
    _common(q, profile=True)
    q.set_defaults(func=cmd_pipeline_evaluate)
    q = psub.add_parser(
        "serve",
        help="serve the scheduled retrain and recalibrate deployments (crons from params.yaml)",
        description=(
            "Register the `retrain` deployment with the cron of pipeline.schedule and the "
            "`recalibrate` deployment with pipeline.recalibration.schedule (unless null), and "
            "run their scheduled runs until interrupted. Point PREFECT_API_URL at a running "
            "server (`prefect server start`) first."
        ),
    )
    _common(q, profile=True)
    q.add_argument("--name", default="llata-retrain", help="deployment name (%(default)s)")
    q.add_argument(
        "--recalibrate-name",
        default="llata-recalibrate",
        help="recalibration deployment name (%(default)s)",
    )
    q.set_defaults(func=cmd_pipeline_serve)


def _common(p: argparse.ArgumentParser, *, profile: bool, default_profile: str = "full") -> None:
    p.add_argument(
        "--params",
        type=Path,
        default=Path(DEFAULT_PARAMS_FILE),
        help="params.yaml to read (default: ./params.yaml); its folder is the project root",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a parameter, e.g. --set train.epochs=3 (repeatable)",
    )
    if profile:
        p.add_argument(
            "--profile",
            choices=["full", "quick"],
            default=default_profile,
            help="quick adds pipeline.quick to the overrides (default: %(default)s)",
        )


def _config(args: argparse.Namespace) -> PipelineConfig:
    return load_pipeline_config(
        args.params, overrides=args.set, profile=getattr(args, "profile", "full")
    )


def _quiet_libraries() -> None:
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _rel(cfg: PipelineConfig, path: Path) -> str:
    try:
        return str(path.relative_to(cfg.root))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- data & stages


def cmd_data_pull(args: argparse.Namespace) -> int:
    from flows.datasource import pull_raw_data
    from llata_core.data import DataError

    cfg = _config(args)
    try:
        result = pull_raw_data(cfg, force=args.force, allow_synthetic=args.allow_synthetic)
    except DataError as err:
        print(f"llata: error: {err}", file=sys.stderr)
        return 1
    dvc = {None: "not a DVC project", True: "unchanged", False: "CHANGED"}[result.dvc_unchanged]
    print(f"{_rel(cfg, result.path)}: {result.source} ({result.origin})")
    print(f"  sha256 {result.sha256}")
    print(f"  dvc status {cfg.layout.dvc_file.name}: {dvc}")
    if result.synthetic:
        print(
            "  WARNING: SYNTHETIC data; models trained on it are marked synthetic_data=true",
            file=sys.stderr,
        )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from features.frame import DataLoadError, load_frame
    from features.validation import DataValidationError, validate_frame
    from flows.stages import frame_spec, validate_stage

    if args.report_dir is not None and args.path is None:
        print(
            "llata: error: --report-dir goes with PATH; data/raw reports to reports/validation",
            file=sys.stderr,
        )
        return 2
    cfg = _config(args)
    try:
        if args.path is None:
            source, report_dir = _rel(cfg, cfg.layout.raw_data), cfg.layout.validation_dir
            report = validate_stage(cfg)
        else:
            source, report_dir = str(args.path), args.report_dir
            frame = load_frame(args.path, cfg.model.data.timestamp_column)
            report = validate_frame(frame, frame_spec(cfg), report_dir)
    except (FileNotFoundError, DataLoadError) as err:
        print(f"llata: error: {err}", file=sys.stderr)
        return 1
    where = _rel(cfg, report_dir) if report_dir is not None else None
    if not report.success:
        print(f"llata: error: {source}: {DataValidationError(report)}", file=sys.stderr)
        if where is not None:
            print(f"report: {where}/validation.json, {where}/data_docs/index.html", file=sys.stderr)
        return 1
    for line in report.describe().splitlines():
        print(f"llata: {line}", file=sys.stderr)  # warnings and ignored columns
    gaps = f", {report.nan_cells} NaN cell(s) to fill" if report.nan_cells else ""
    saved = f"; report in {where}/" if where is not None else ""
    print(
        f"{source}: valid ({report.rows} rows, {len(report.channels)} channels, "
        f"frequency {report.frequency}{gaps}){saved}"
    )
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from features.frame import DataLoadError
    from features.validation import DataValidationError
    from flows.stages import features_stage

    cfg = _config(args)
    try:
        result = features_stage(cfg)
    except (FileNotFoundError, DataLoadError, DataValidationError) as err:
        print(f"llata: error: {err}", file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "feature_repo": _rel(cfg, cfg.layout.feature_repo),
                "training_frame": _rel(cfg, result.training_frame),
                "rows": result.rows,
                "channels": list(result.channels),
                "retrieval": result.retrieval,
                "filled_values": result.filled,
                "synthetic_data": result.lineage["synthetic_data"],
            },
            indent=2,
        )
    )
    return 0


def cmd_pipeline_backbone(args: argparse.Namespace) -> int:
    from flows.stages import backbone_stage

    cfg = _config(args)
    stamp = backbone_stage(cfg)
    print(f"{_rel(cfg, stamp)}: {stamp.read_text(encoding='utf-8').strip()}")
    return 0


def cmd_pipeline_train(args: argparse.Namespace) -> int:
    from flows.stages import train_stage

    cfg = _config(args)
    selection = train_stage(cfg)
    print(_candidate_table(selection))
    print(f"winner: {selection.reason}")
    print(f"artifact: {_rel(cfg, cfg.layout.model_dir)}")
    return 0


def _candidate_table(selection: Any) -> str:
    """The candidates as a text table, the one `llata registry show` prints."""
    from serving.registry_cli import selection_table

    return selection_table(selection.to_dict())


def cmd_pipeline_evaluate(args: argparse.Namespace) -> int:
    from flows.evaluate import evaluate_stage

    cfg = _config(args)
    result = evaluate_stage(cfg)
    shown = {k: v for k, v in result.metrics.items() if k != "mse_by_channel"}
    print(json.dumps(shown, indent=2))
    return 0


# --------------------------------------------------------------------------- Prefect


def _prefect_environment() -> None:
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
def _prefect_api() -> Iterator[None]:
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
            _drain_prefect_clients()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _drain_prefect_clients(timeout: float = 30.0) -> None:
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


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    cfg = _config(args)  # validate params.yaml before starting anything
    _prefect_environment()
    from flows.retrain import RetrainRequest, retrain

    request = RetrainRequest(
        params_file=str(Path(args.params).resolve()),
        profile=args.profile,
        overrides=tuple(args.set),
        allow_synthetic=args.allow_synthetic,
        force=args.force,
    )
    return _run_flow(retrain, request, "pipeline", lambda r, s: _print_summary(cfg, r, s))


def _run_flow(
    run: Callable[..., Any], request: object, what: str, summary: Callable[[Any, float], None]
) -> int:
    """Run a flow against the run's Prefect API; print its summary, or why it failed (1)."""
    start = time.perf_counter()
    # The summary logs too (loading the production model): the API stays up until it is
    # printed, or Prefect's log handler reports a failed connection at exit.
    with _prefect_api():
        state = run(request, return_state=True)
        seconds = time.perf_counter() - start
        if not state.is_completed():
            print(f"\nllata: {what} failed after {seconds:.0f}s: {state.message}", file=sys.stderr)
            print("production model unchanged.", file=sys.stderr)
            return 1
        summary(state.result(), seconds)
    return 0


def _print_summary(cfg: PipelineConfig, result: object, seconds: float) -> None:
    """Production model, metrics, a sample forecast and how to serve it."""
    from flows.registry_stages import open_registry
    from flows.retrain import RetrainResult
    from llata_core.forecaster import Forecaster
    from llata_core.jobs import forecast_frame

    assert isinstance(result, RetrainResult)
    production = open_registry(cfg).production()
    m = result.metrics
    layout = cfg.layout
    print()
    print(f"LLaTA pipeline finished in {seconds:.0f}s ({cfg.profile} profile)")
    if result.synthetic_data:
        print("  !!! trained on SYNTHETIC data (no real source was reachable) !!!")
    print(f"  data        {_rel(cfg, layout.raw_data)} ({result.data_source})")
    from flows.stages import read_selection

    selection = read_selection(cfg)
    if selection is not None:
        print("  candidates  (chosen on validation; * = winner)")
        for line in _candidate_table(selection).splitlines():
            print(f"    {line}")
        print(f"  winner      {result.selection_reason}")
    verdict = "PROMOTED" if result.promoted else "not promoted"
    print(f"  registered  {result.candidate}: {verdict} ({result.reason})")
    print(f"  test        {_test_scores(m)}")
    reports = ", ".join(
        _rel(cfg, p)
        for p in (
            layout.metrics,
            layout.forecast_plot,
            layout.loss_plot,
            layout.validation_dir / "data_docs" / "index.html",
        )
    )
    print(f"  reports     {reports}")
    if production is None:
        print("  production  none")
        return
    pm = production.metrics
    print(f"  production  {production.tag}: test {_test_scores(pm, counts=False)}")
    from features.frame import load_frame
    from serving.registry_gates import lineage_of

    if lineage_of(production.metadata)["dataset"] not in (None, cfg.params.dataset):
        print(
            f"\nThe production model was trained on {lineage_of(production.metadata)['dataset']},"
            f" not on {cfg.params.dataset}: no sample forecast of this run's data."
        )
    else:
        fc = Forecaster.load(production.path)
        data = cfg.model.data
        ts_col = data.timestamp_column
        history = load_frame(layout.raw_data, ts_col)
        which = ""
        if data.series_column is not None:  # many series: the first one, its value column
            first = history[data.series_column].iloc[0]
            history = history[history[data.series_column] == first]
            history = history[[ts_col, data.value_column]]
            which = f" of series {first}"
        history = history.tail(fc.input_size)
        forecast = forecast_frame(fc, history, ts_col)
        print(
            f"\nSample forecast of the production model{which}: the {len(forecast)} steps "
            f"after {history[ts_col].iloc[-1]} (first 5, data units):"
        )
        print(forecast.head(5).to_string(index=False, float_format=lambda v: f"{v:9.3f}"))
    print("\nServe it (picks up the production alias, reloads on promotion):")
    from flows.params import RegistryParams

    reg = cfg.params.registry
    default = RegistryParams.model_fields["model_name"].default  # what the service reads
    env = "" if reg.model_name == default else f"LLATA_MODEL_NAME={reg.model_name} "
    if reg.dir is not None:
        env += f"LLATA_REGISTRY_DIR={cfg.root / reg.dir} "
    print(f"  {env}bentoml serve serving.service:Forecaster")
    print("Registry:  llata registry list | show production | rollback")


def _test_scores(metrics: dict[str, Any], *, counts: bool = True) -> str:
    """A model's test scores as one line, in its task's metrics: OWA first for many
    series (with SMAPE, MASE and the 80 % coverage), MSE and MAE for one wide series."""

    def num(key: str) -> str:
        value = metrics.get(key)
        return f"{value:.4f}" if isinstance(value, int | float) else "-"

    if metrics.get("metric") == "owa":
        line = f"OWA {num('owa')}  SMAPE {num('smape')}  MASE {num('mase')}"
        if "coverage_80" in metrics:
            line += f"  80% coverage {num('coverage_80')}"
        if counts and "n_series" in metrics:
            line += f" over {metrics['n_series']} series ({metrics.get('dataset')})"
        return line
    line = f"MSE {num('mse')}  MAE {num('mae')}"
    if counts and "n_windows" in metrics:
        line += f" over {metrics['n_windows']} windows ({metrics.get('dataset')}, scaled)"
    return line


def cmd_pipeline_recalibrate(args: argparse.Namespace) -> int:
    cfg = _config(args)  # validate params.yaml before starting anything
    _prefect_environment()
    from flows.recalibrate import RecalibrateRequest, recalibrate

    request = RecalibrateRequest(
        params_file=str(Path(args.params).resolve()), overrides=tuple(args.set)
    )
    return _run_flow(
        recalibrate, request, "recalibration", lambda r, s: _print_recalibration(cfg, r, s)
    )


def _print_recalibration(cfg: PipelineConfig, result: object, seconds: float) -> None:
    """The registered version, the gate's verdict and the holdout metrics, both sides."""
    from flows.recalibrate import RecalibrateResult

    assert isinstance(result, RecalibrateResult)
    verdict = "PROMOTED" if result.promoted else "not promoted"
    recal = cfg.params.recalibration
    print(f"\nLLaTA recalibration finished in {seconds:.0f}s")
    print(f"  data        {_rel(cfg, cfg.layout.raw_data)}")
    print(
        f"  windows     scores from the newest {result.calibration_windows}, checked on the "
        f"newest {result.holdout_windows} (configured {recal.recent_windows} / "
        f"{recal.holdout_windows})"
    )
    print(f"  registered  {result.candidate}, a recalibration of {result.parent}: {verdict}")
    print(f"  reason      {result.reason}")
    for key, value in result.holdout.items():
        before = (result.replaced or {}).get(key)
        was = f"  (production {before:.4f})" if before is not None else ""
        print(f"  holdout     {key:<14} {value:.4f}{was}")
    print(f"  production  {result.production}")


def cmd_pipeline_serve(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _prefect_environment()
    from flows.deploy import serve_scheduled
    from flows.recalibrate import RecalibrateRequest
    from flows.retrain import RetrainRequest

    params_file = str(Path(args.params).resolve())
    request = RetrainRequest(params_file=params_file, profile=args.profile, overrides=args.set)
    schedule = cfg.params.schedule
    print(f"serving retrain/{args.name} on cron '{schedule.cron}' ({schedule.timezone})")
    recal = cfg.params.recalibration.schedule
    if recal is not None:
        print(
            f"serving recalibrate/{args.recalibrate_name} on cron '{recal.cron}' ({recal.timezone})"
        )
    serve_scheduled(
        cfg,
        request,
        name=args.name,
        recalibrate_request=RecalibrateRequest(params_file=params_file, overrides=args.set),
        recalibrate_name=args.recalibrate_name,
    )
    return 0
