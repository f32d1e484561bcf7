"""``llata registry ...``: list, show, promote and roll back registered model versions.

The lead's ``llata`` command line calls :func:`add_subcommands` on its subparsers; each
leaf sets ``args.func(args) -> int`` (the exit code). ``python -m serving.registry_cli``
runs the same commands standalone.

Exit codes: 0 when the command did what was asked or took a promotion decision (a
rejected candidate is a normal outcome, not a failure; read ``promoted`` in the output),
1 when it refused or failed (unknown version, incomparable metrics, scoring error, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from filelock import Timeout

from serving.registry import (
    DEFAULT_MODEL_NAME,
    ArtifactError,
    Registry,
    RegistryError,
    VersionInfo,
    incomparable,
    lineage_of,
    stored_mse_scorer,
)

logger = logging.getLogger(__name__)


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``registry {list,show,promote,rollback,history}`` to a command line.

    Args:
        subparsers: The object ``ArgumentParser.add_subparsers()`` returned.
    """
    parser = subparsers.add_parser(
        "registry",
        help="list, show, promote and roll back registered model versions",
        description="Model versions in BentoML's store and the production/previous aliases.",
    )
    parser.add_argument(
        "--model-name", default=DEFAULT_MODEL_NAME, help="BentoML model name (%(default)s)"
    )
    parser.add_argument(
        "--registry-dir",
        type=Path,
        default=None,
        help="aliases and history directory (default $BENTOML_HOME/llata_registry)",
    )
    commands = parser.add_subparsers(dest="registry_command", metavar="COMMAND", required=True)

    p_list = commands.add_parser("list", help="all versions, oldest first")
    p_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p_list.set_defaults(func=_guarded(_cmd_list))

    p_show = commands.add_parser(
        "show", help="one version: scores, data lineage, the candidates it was chosen among"
    )
    p_show.add_argument("ref", metavar="VERSION_OR_ALIAS", help="version, tag, prefix or alias")
    p_show.add_argument("--json", action="store_true", help="all its metadata, as JSON")
    p_show.set_defaults(func=_guarded(_cmd_show))

    p_promote = commands.add_parser(
        "promote",
        help="make VERSION production if its stored MSE beats production's by --margin",
        description=(
            "Compares the stored metrics.json MSE of VERSION and production; they must score "
            "the same futures of the same data (equal eval_targets_hash, any lookback; "
            "equal eval_split_hash for older artifacts), otherwise the promotion is refused "
            "unless --force is given."
        ),
    )
    p_promote.add_argument("version", metavar="VERSION")
    p_promote.add_argument(
        "--margin",
        type=float,
        default=0.0,
        help="relative MSE improvement required, in [0, 1) (%(default)s)",
    )
    p_promote.add_argument(
        "--force", action="store_true", help="promote without comparing (recorded in history)"
    )
    p_promote.set_defaults(func=_guarded(_cmd_promote))

    p_rollback = commands.add_parser("rollback", help="swap production and previous")
    p_rollback.set_defaults(func=_guarded(_cmd_rollback))

    p_history = commands.add_parser("history", help="promotion history, as JSON lines")
    p_history.set_defaults(func=_guarded(_cmd_history))


def _registry(args: argparse.Namespace) -> Registry:
    return Registry(model_name=args.model_name, registry_dir=args.registry_dir)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _fmt_metric(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, int | float) else "-"


def _table(infos: Sequence[VersionInfo]) -> str:
    header = ("TAG", "CREATED", "MSE", "MAE", "EVAL_SPLIT", "ALIASES")
    rows = [
        (
            info.tag,
            info.created.strftime("%Y-%m-%d %H:%M:%S"),
            _fmt_metric(info.metrics.get("mse")),
            _fmt_metric(info.metrics.get("mae")),
            str(info.metadata.get("eval_split_hash", "-"))[:12],
            ",".join(info.aliases) or "-",
        )
        for info in infos
    ]
    return text_table(header, rows)


def _cmd_list(args: argparse.Namespace) -> int:
    infos = _registry(args).list_versions()
    if args.json:
        _print_json([info.to_dict() for info in infos])
    elif not infos:
        print(f"no versions of {args.model_name} registered")
    else:
        print(_table(infos))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    info = _registry(args).get(args.ref)
    if args.json:
        _print_json(info.to_dict())
        return 0
    aliases = ", ".join(info.aliases) or "no alias"
    print(f"{info.tag}  ({aliases}; created {info.created:%Y-%m-%d %H:%M:%S})")
    mse, mae = _fmt_metric(info.metrics.get("mse")), _fmt_metric(info.metrics.get("mae"))
    print(f"  test        mse {mse}  mae {mae}")
    lineage = lineage_of(info.metadata)
    print(
        f"  data        {lineage['dataset']} / series {lineage['series_id']}, channels "
        f"{lineage['channels']}, frequency {lineage['frequency']}, "
        f"{'GENERATED' if lineage['synthetic'] else 'real'} data"
    )
    members = info.metadata.get("members")
    if info.metadata.get("model_kind") == "combination" and isinstance(members, list):
        print("  combination " + members_line(members))
    selection = info.metadata.get("selection")
    if isinstance(selection, dict):
        print("  candidates  (chosen on validation; * = winner)")
        print(_indent(selection_table(selection), "    "))
        print(f"  why         {selection.get('reason')}")
    else:
        print("  candidates  (not recorded: registered without a candidate selection)")
    print("  full metadata: llata registry show --json " + info.version)
    return 0


def members_line(members: Sequence[Any]) -> str:
    """A combination's members as `llata registry show` prints them: each one's name,
    family, lookback and weight."""
    return " + ".join(
        f"{m.get('weight', '?')} x {m.get('name', '?')} ({m.get('kind', '?')}, lookback "
        f"{m.get('input_size', '?')})"
        for m in members
        if isinstance(m, dict)
    )


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows of text cells as left-aligned columns, the header first."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def selection_table(selection: dict[str, Any]) -> str:
    """The candidates of a selection (`Selection.to_dict()`, as the registry stores it):
    validation chose, test is shown beside it; `*` marks the winner."""
    header = ("CANDIDATE", "KIND", "LOOKBACK", "VAL", "TEST", "TRAIN_S", "PARAMS", "MS/WIN")
    rows = [
        (
            ("* " if c.get("name") == selection.get("winner") else "  ") + str(c.get("name")),
            str(c.get("model_kind", "-")),
            str(c.get("input_size", "-")),
            _fmt_metric(c.get("val_score")),
            _fmt_metric(c.get("test_score")),
            _fmt_metric(c.get("train_seconds")),
            str(c.get("parameters", "-")),
            _fmt_metric(c.get("serving_ms_per_window")),
        )
        for c in selection.get("candidates", [])
    ]
    return text_table(header, rows)


def _cmd_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    candidate = registry.get(args.version)
    if args.force:
        decision = registry.promote(candidate.tag, score=None, margin=args.margin, force=True)
    else:
        production = registry.production()
        if production is not None and production.tag != candidate.tag:
            problem = incomparable(candidate, production)
            if problem:
                print(
                    f"refusing to promote {candidate.tag}: {problem}; compare them on one "
                    "split (Registry.promote with a scorer, as the pipeline does) or pass --force",
                    file=sys.stderr,
                )
                return 1
        decision = registry.promote(
            candidate.tag, score=stored_mse_scorer(registry, candidate), margin=args.margin
        )
    _print_json(dataclasses.asdict(decision))
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    _print_json(dataclasses.asdict(_registry(args).rollback()))
    return 0


def _cmd_history(args: argparse.Namespace) -> int:
    for entry in _registry(args).history():
        print(json.dumps(entry))
    return 0


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turns registry errors into a message on stderr and exit code 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (RegistryError, ArtifactError, ValueError, Timeout) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return wrapper


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m serving.registry_cli registry list``."""
    parser = argparse.ArgumentParser(prog="llata")
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
