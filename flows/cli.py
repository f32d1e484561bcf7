"""Commands of the production pipeline, plugged into `llata` (entry-point group
`llata.commands`): `data pull`, `validate`, `features`, and
`pipeline run|recalibrate|train|evaluate|serve`.

Each command validates `params.yaml` once (`flows.config.load_pipeline_config`) and calls
one stage function (`flows.stages`, `flows.training_stages`, `flows.selection_stages`,
`flows.evaluate`, `flows.registry_stages`), the same function the Prefect task of that step
calls. `dvc.yaml` runs these commands, so DVC, Prefect and a person at the shell share one
implementation. Prefect, Feast, Great Expectations and torch are imported inside the
commands: `llata --help` stays fast and `llata` configures logging before Prefect does.

Exit codes: 0 on success, 1 when the data or the run failed (with a message naming why),
2 for bad configuration (reported by `llata` itself).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from flows.config import PipelineConfig, load_pipeline_config
from flows.params import DEFAULT_PARAMS_FILE
from flows.prefect_runtime import configure_environment, run_flow
from flows.run_summary import candidate_table, print_recalibration_summary, print_run_summary

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
    print(f"{cfg.shown(result.path)}: {result.source} ({result.origin})")
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
            source, report_dir = cfg.shown(cfg.layout.raw_data), cfg.layout.validation_dir
            report = validate_stage(cfg)
        else:
            source, report_dir = str(args.path), args.report_dir
            frame = load_frame(args.path, cfg.model.data.timestamp_column)
            report = validate_frame(frame, frame_spec(cfg), report_dir)
    except (FileNotFoundError, DataLoadError) as err:
        print(f"llata: error: {err}", file=sys.stderr)
        return 1
    where = cfg.shown(report_dir) if report_dir is not None else None
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
                "feature_repo": cfg.shown(cfg.layout.feature_repo),
                "training_frame": cfg.shown(result.training_frame),
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
    from flows.training_stages import backbone_stage

    cfg = _config(args)
    stamp = backbone_stage(cfg)
    print(f"{cfg.shown(stamp)}: {stamp.read_text(encoding='utf-8').strip()}")
    return 0


def cmd_pipeline_train(args: argparse.Namespace) -> int:
    from flows.selection_stages import train_stage

    cfg = _config(args)
    selection = train_stage(cfg)
    print(candidate_table(selection))
    print(f"winner: {selection.reason}")
    print(f"artifact: {cfg.shown(cfg.layout.model_dir)}")
    return 0


def cmd_pipeline_evaluate(args: argparse.Namespace) -> int:
    from flows.evaluate import evaluate_stage

    cfg = _config(args)
    result = evaluate_stage(cfg)
    shown = {k: v for k, v in result.metrics.items() if k != "mse_by_channel"}
    print(json.dumps(shown, indent=2))
    return 0


def cmd_pipeline_run(args: argparse.Namespace) -> int:
    cfg = _config(args)  # validate params.yaml before starting anything
    configure_environment()
    from flows.retrain import RetrainRequest, retrain

    request = RetrainRequest(
        params_file=str(Path(args.params).resolve()),
        profile=args.profile,
        overrides=tuple(args.set),
        allow_synthetic=args.allow_synthetic,
        force=args.force,
    )
    return run_flow(retrain, request, "pipeline", lambda r, s: print_run_summary(cfg, r, s))


def cmd_pipeline_recalibrate(args: argparse.Namespace) -> int:
    cfg = _config(args)  # validate params.yaml before starting anything
    configure_environment()
    from flows.recalibrate import RecalibrateRequest, recalibrate

    request = RecalibrateRequest(
        params_file=str(Path(args.params).resolve()), overrides=tuple(args.set)
    )
    return run_flow(
        recalibrate, request, "recalibration", lambda r, s: print_recalibration_summary(cfg, r, s)
    )


def cmd_pipeline_serve(args: argparse.Namespace) -> int:
    cfg = _config(args)
    configure_environment()
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
