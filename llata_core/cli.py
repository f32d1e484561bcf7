"""The `llata` command line: train, calibrate, evaluate, forecast, prepare backbones.

Commands of the production system (data, validation, features, registry, pipeline) live
with their packages and are found through the `llata.commands` entry-point group, so
`llata_core` itself imports none of Prefect, Feast, BentoML or Great Expectations.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path

from llata_core.config import M4_PREFIX, ConfigError, LlataConfig, config_from_dict, load_params

log = logging.getLogger("llata")

DEFAULT_PARAMS = Path("params.yaml")


def _config(args: argparse.Namespace) -> LlataConfig:
    path = (
        args.params
        if args.params is not None
        else (DEFAULT_PARAMS if DEFAULT_PARAMS.is_file() else None)
    )
    return load_params(path, args.set or [])


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        type=Path,
        default=None,
        help="params.yaml to read (default: ./params.yaml when present, else built-in defaults)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a parameter, e.g. --set train.epochs=3 (repeatable)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    from llata_core.jobs import train_job

    cfg = _config(args)
    outcome = train_job(
        cfg,
        out_dir=args.out,
        run_dir=args.run_dir,
        resume=args.resume,
        allow_synthetic=args.allow_synthetic,
    )
    if outcome.metrics is None:  # a non-main rank of a distributed run
        return 0
    print(json.dumps(outcome.summary(), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from llata_core.forecaster import Forecaster
    from llata_core.tasks import task_for_model

    fc = Forecaster.load(args.model)
    base = fc.config.data
    data = None
    if args.dataset:
        section = {"dataset": args.dataset}
        if base.series_column is not None and not args.dataset.startswith(M4_PREFIX):
            # Another long-format file, read with the model's column names.
            keep = {"series_column", "value_column", "timestamp_column", "seasonality"}
            section |= base.model_dump(include=keep)
        data = config_from_dict({"data": section}).data
    task = task_for_model(fc, data, allow_synthetic=args.allow_synthetic)
    scores = task.score(fc.model, args.split)
    result: dict = {"dataset": (data or base).dataset, "split": args.split, **scores}
    if args.plot:
        task.plot(fc, args.plot)
    if args.metrics_out:
        args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
        args.metrics_out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not k.startswith("mse_by")}, indent=2))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from llata_core.jobs import calibrate_job, recalibrate_job

    if args.data is None:
        if args.recent_windows is not None or args.holdout_windows is not None or args.aci_gamma:
            raise SystemExit("--recent-windows, --holdout-windows and --aci-gamma need --data")
        outcome = calibrate_job(
            args.model, allow_synthetic=args.allow_synthetic, levels=args.levels
        )
    else:
        if args.recent_windows is None or args.holdout_windows is None:
            raise SystemExit("--data needs --recent-windows and --holdout-windows")
        outcome = recalibrate_job(
            args.model,
            args.data,
            recent_windows=args.recent_windows,
            holdout_windows=args.holdout_windows,
            levels=args.levels,
            aci_gamma=args.aci_gamma,
        )
    print(json.dumps(outcome.summary(), indent=2))
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from llata_core.data import read_table
    from llata_core.forecaster import Forecaster
    from llata_core.jobs import forecast_frame

    fc = Forecaster.load(args.model)
    frame = read_table(args.input, args.timestamp_column)
    out = forecast_frame(fc, frame, args.timestamp_column, args.horizon, args.levels)
    if args.output:
        out.to_csv(args.output, index=False)
    else:
        print(out.to_csv(index=False), end="")
    return 0


def cmd_backbone_prepare(args: argparse.Namespace) -> int:
    from llata_core.backbone import prepare_backbone

    cfg = _config(args)
    bb = prepare_backbone(cfg.model)
    print(
        json.dumps(
            {
                "backbone": bb.name,
                "revision": bb.revision,
                "hidden_size": bb.hidden_size,
                "n_layers": cfg.model.n_layers,
                "n_principal": int(bb.principal.shape[0]),
            }
        )
    )
    if args.stamp:
        args.stamp.parent.mkdir(parents=True, exist_ok=True)
        args.stamp.write_text(
            json.dumps(
                {
                    "backbone": bb.name,
                    "revision": bb.revision,
                    "n_layers": cfg.model.n_layers,
                    "n_principal": int(bb.principal.shape[0]),
                },
                indent=2,
            )
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llata", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a forecaster and save its artifact")
    _add_config_args(p)
    p.add_argument("--out", type=Path, default=Path("artifacts/model"), help="artifact directory")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=Path("artifacts/run"),
        help="checkpoints and history (resumable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from --run-dir's checkpoint")
    p.add_argument(
        "--allow-synthetic",
        action="store_true",
        help="train on generated data when the benchmark is unreachable",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score an artifact on a dataset's split (zero-shot too)")
    p.add_argument("--model", type=Path, required=True, help="artifact directory")
    p.add_argument("--dataset", help="another dataset (benchmark name or file) for zero-shot")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--metrics-out", type=Path, help="write the metrics as JSON here")
    p.add_argument("--plot", type=Path, help="write a forecast-vs-actual PNG here")
    p.add_argument("--allow-synthetic", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("forecast", help="forecast past the end of a CSV/parquet file")
    p.add_argument("--model", type=Path, required=True, help="artifact directory")
    p.add_argument("--input", type=Path, required=True, help="wide file: timestamp + channels")
    p.add_argument("--timestamp-column", default="date")
    p.add_argument("--horizon", type=int, help="steps to forecast (default: the model's)")
    p.add_argument("--output", type=Path, help="CSV to write (default: stdout)")
    p.add_argument(
        "--levels",
        type=float,
        nargs="+",
        metavar="LEVEL",
        help="conformal interval levels in percent, e.g. --levels 80 95: adds the columns "
        "<channel>_lo_<level> and <channel>_hi_<level> (needs a calibrated model)",
    )
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser(
        "calibrate",
        help="add conformal prediction intervals to an artifact (no retraining)",
        description="Store the model's absolute residuals on its validation windows in the "
        "artifact (split conformal, per horizon step and channel), record the test split's "
        "interval coverage and score in metrics.json, and rewrite the artifact atomically.",
    )
    p.add_argument("--model", type=Path, required=True, help="artifact directory")
    p.add_argument(
        "--levels",
        type=float,
        nargs="+",
        default=[80.0, 95.0],
        metavar="LEVEL",
        help="levels (percent) whose test coverage and score are recorded (default: 80 95); "
        "the stored scores answer any level",
    )
    p.add_argument("--allow-synthetic", action="store_true")
    p.add_argument(
        "--data",
        type=Path,
        help="recalibrate on the newest windows of this file (after drift) instead of the "
        "validation split; needs --recent-windows and --holdout-windows",
    )
    p.add_argument(
        "--recent-windows",
        type=int,
        metavar="N",
        help="calibrate on the newest N complete windows of --data (e.g. 720: 30 days hourly)",
    )
    p.add_argument(
        "--holdout-windows",
        type=int,
        metavar="N",
        help="check the scheme's coverage on the newest N windows first (recorded in "
        "metrics.json); the stored scores include them",
    )
    p.add_argument(
        "--aci-gamma",
        type=float,
        default=0.0,
        metavar="GAMMA",
        help="with --data: adaptive conformal step size; the model's intervals' miss rate on "
        "the holdout moves the level each nominal level is read at (default 0: off)",
    )
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("backbone", help="backbone utilities")
    bsub = p.add_subparsers(dest="backbone_command", required=True)
    q = bsub.add_parser(
        "prepare", help="truncate and cache the backbone and its principal embeddings"
    )
    _add_config_args(q)
    q.add_argument("--stamp", type=Path, help="write a small JSON describing the cache (for DVC)")
    q.set_defaults(func=cmd_backbone_prepare)

    for ep in entry_points(group="llata.commands"):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        return int(args.func(args) or 0)
    except (ConfigError, ValueError, OSError, RuntimeError, ArithmeticError) as err:
        # Bad input is reported in one line naming the problem, not as a traceback.
        log.debug("failure", exc_info=True)
        print(f"llata: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
