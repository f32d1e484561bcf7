"""The `retrain` Prefect flow end to end, under `prefect_test_harness`, on a tiny backbone.

Real Prefect (a temporary local server for the session), real Great Expectations, Feast
and BentoML's model store in temporary homes. Every failure path checks that production
is untouched and that no half-written artifact is left behind.

One module workspace (a small hourly sine series, a tiny llama) holds the registry's
production model, trained by the first run of the main job (`llata pipeline run`); each
test that breaks something works on a copy of that workspace against the same registry.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Prefect reads its settings when it is imported: point it at private temporary homes and
# switch off telemetry first. The harness below supplies the API server and its database.
_PREFECT_HOME = tempfile.mkdtemp(prefix="llata-test-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"] = "ignore"
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.actions import WorkPoolCreate  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows.config import Layout, load_pipeline_config  # noqa: E402
from flows.deploy import build_deployment, build_recalibrate_deployment  # noqa: E402
from flows.params import RecalibrationParams, RunnerParams  # noqa: E402
from flows.recalibrate import (  # noqa: E402
    RECALIBRATION_ARTIFACT,
    RecalibrateRequest,
    RecalibrateResult,
    recalibrate,
)
from flows.registry_stages import promote_stage, register_stage  # noqa: E402
from flows.retrain import (  # noqa: E402
    CANDIDATES_ARTIFACT,
    FORECAST_ARTIFACT,
    METRICS_ARTIFACT,
    VALIDATION_ARTIFACT,
    RetrainRequest,
    RetrainResult,
    candidate_runner,
    retrain,
)
from flows.worker_lifetime import WATCHER_THREAD  # noqa: E402
from llata_core.cli import main  # noqa: E402
from llata_core.forecaster import Forecaster, verify_artifact  # noqa: E402
from serving.registry import Registry  # noqa: E402
from tests.conftest import sine_frame  # noqa: E402
from tests.test_pipeline import (  # noqa: E402
    BIN,
    REPO,
    _paths,
    corrupt,
    resolved_dvc_stages,
    sine_workspace,
)

# The baseline trains a little; the "worse" candidate barely moves from its initialisation.
BASELINE = ("train.epochs=2", "train.max_steps_per_epoch=6")
WORSE = ("train.lr=1e-7", "train.max_steps_per_epoch=1")
CRASH = ("train.lr=1e30", "train.epochs=2", "train.max_steps_per_epoch=3")


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One temporary Prefect server for the session (it takes a while to start)."""
    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from bentoml._internal.utils.analytics import usage_stats

    home = tmp_path_factory.mktemp("bentoml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_HOME", str(home))
        usage_stats.do_not_track.cache_clear()
        yield home


@pytest.fixture(scope="module")
def baseline(
    prefect_api: str, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The main job, as `make run` runs it (`llata pipeline run`, in a subprocess), on
    the module workspace: it leaves the production model every other test protects."""
    root = tmp_path_factory.mktemp("workspace")
    params = sine_workspace(root)
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = ["llata", "pipeline", "run", "--params", str(params), "--profile", "full"]
    for override in BASELINE:
        cmd += ["--set", override]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    production = Registry().production()
    return {"root": root, "params": params, "run": done, "production": production}


SINGLES = {"llata", "llata-no-llm", "dlinear"}


def check_candidates(scores: dict[str, float]) -> str | None:
    """Every listed candidate was trained, plus at most the combination of the two best by
    validation (none when validation put the whole weight on one of them); its name."""
    assert set(scores) >= SINGLES
    first, second = sorted(SINGLES, key=lambda name: scores[name])[:2]
    extra = set(scores) - SINGLES
    assert extra <= {f"{first}+{second}"}
    return extra.pop() if extra else None


def run_flow(params: Path, *overrides: str) -> Any:
    """Run the flow in this process against the harness; return its final state."""
    request = RetrainRequest(params_file=str(params), overrides=(*BASELINE, *overrides))
    return retrain(request, return_state=True)


def digest_tree(root: Path) -> dict[str, str]:
    """Content hash of every file under `root` (hidden temp files included)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def registry_state() -> tuple[str | None, list[str], bytes]:
    registry = Registry()
    aliases = registry.aliases_path.read_bytes() if registry.aliases_path.exists() else b""
    return registry.production_tag(), [v.tag for v in registry.list_versions()], aliases


def copy_workspace(baseline: dict[str, Any], dest: Path) -> Path:
    shutil.copytree(baseline["root"], dest)
    return dest / "params.yaml"


def leftovers(artifacts: Path) -> list[str]:
    """Temporary files or directories an interrupted atomic write would leave."""
    return [str(p) for p in artifacts.rglob(".*") if p.name not in (".gitignore",)]


# --------------------------------------------------------------------------- main job


def test_main_job_trains_registers_promotes_and_prints_no_traceback(
    baseline: dict[str, Any],
) -> None:
    done = baseline["run"]
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    assert "PROMOTED (no production version yet)" in done.stdout
    assert "Sample forecast of the production model" in done.stdout
    assert "bentoml serve serving.service:Forecaster" in done.stdout

    production = baseline["production"]
    assert production is not None and production.tag in done.stdout
    metadata = production.metadata
    assert metadata["synthetic_data"] is False
    assert metadata["raw_data_source"] == "file"  # placed there, not pulled
    assert metadata["eval_split_hash"] == production.metrics["eval_split_hash"]
    assert metadata["params"]["model"]["backbone"] == "tiny-llama"
    assert metadata["git_revision"]
    verify_artifact(production.path)
    metrics = json.loads((baseline["root"] / "reports/metrics.json").read_text())
    assert metrics["mse"] == pytest.approx(production.metrics["mse"])

    # Every candidate params.yaml lists was trained, scored and costed; the winner is the
    # best on validation (or the cheapest within the tolerance of it), never picked on test.
    selection = metadata["selection"]
    reports = {c["name"]: c for c in selection["candidates"]}
    combination = check_candidates({n: c["val_score"] for n, c in reports.items()})
    if combination is not None:
        assert reports[combination]["model_kind"] == "combination"
    best = min(reports.values(), key=lambda c: c["val_score"])
    winner = reports[selection["winner"]]
    assert winner["val_score"] <= best["val_score"] * (1 + selection["tolerance"])
    assert metadata["candidate"] == selection["winner"]
    for c in reports.values():
        assert c["parameters"] > 0 and c["serving_ms_per_window"] > 0 and c["train_seconds"] > 0
    assert "CANDIDATE" in done.stdout and f"* {selection['winner']}" in done.stdout
    lineage = metadata["data_lineage"]
    assert lineage == {
        "dataset": "sine",
        "series_id": "sine",
        "channels": ["c0", "c1", "c2"],
        "frequency": "h",
        "synthetic": False,
    }
    shown = subprocess.run(
        [str(BIN / "llata"), "registry", "show", "production"],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert "chosen on validation" in shown.stdout and selection["reason"] in shown.stdout
    if combination is not None:
        assert combination in shown.stdout


def test_flow_leaves_exactly_the_files_dvc_declares(baseline: dict[str, Any]) -> None:
    root = baseline["root"]
    params = yaml.safe_load(baseline["params"].read_text())
    declared: set[str] = set()
    for stage in resolved_dvc_stages(params).values():
        for key in ("outs", "metrics", "plots"):
            declared.update(_paths(stage.get(key, [])))
    for path in declared:
        assert (root / path).exists(), f"the flow did not write {path}"
    cfg = load_pipeline_config(baseline["params"])
    layout = Layout.under(root, cfg.params)
    written = {
        str(p.relative_to(root))
        for top in (layout.root / "artifacts", layout.root / "reports")
        for p in top.rglob("*")
        if p.is_file()
    }
    undeclared = [p for p in written if not any(p == d or p.startswith(d + "/") for d in declared)]
    assert undeclared == []
    assert leftovers(root / "artifacts") == []


# --------------------------------------------------------------------------- failure paths


def test_worse_candidate_is_registered_but_not_promoted(baseline: dict[str, Any]) -> None:
    production, versions, aliases = registry_state()
    state = run_flow(baseline["params"], *WORSE)
    assert state.is_completed(), state.message
    result = state.result()
    assert isinstance(result, RetrainResult)
    assert not result.promoted
    assert result.candidate_mse is not None and result.production_mse is not None
    assert result.candidate_mse > result.production_mse
    assert result.production == production
    after_production, after_versions, after_aliases = registry_state()
    assert after_production == production and after_aliases == aliases
    assert after_versions == [*versions, result.candidate]
    assert Registry().history()[-1]["action"] == "reject"

    # The run published its report, and its logs carry no traceback.
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        )
    by_key = {a.key: a for a in artifacts}
    table = by_key[METRICS_ARTIFACT].data
    rows = json.loads(table) if isinstance(table, str) else table
    values = {row["metric"]: row["value"] for row in rows}
    assert values["test_mse"] == pytest.approx(result.metrics["mse"])
    assert values["gate_production_mse"] == pytest.approx(result.production_mse)
    candidates = by_key[CANDIDATES_ARTIFACT].data
    candidates = json.loads(candidates) if isinstance(candidates, str) else candidates
    check_candidates({row["candidate"]: row["val_mse"] for row in candidates})
    assert [row["winner"] for row in candidates].count(True) == 1
    markdown = by_key[FORECAST_ARTIFACT].data
    assert "not promoted" in markdown
    assert markdown.count("data:image/png;base64,") == 2
    assert logs and not [log.message for log in logs if "Traceback" in log.message]


def test_invalid_data_stops_before_features_model_and_registry(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    params = copy_workspace(baseline, tmp_path / "ws")
    root = params.parent
    corrupt(root / "data/raw/series.csv")
    artifacts = digest_tree(root / "artifacts")
    before = registry_state()

    state = run_flow(params)
    assert state.is_failed()
    for check in ("timestamp_unique", "numeric_channel", "nan_share"):
        assert check in state.message
    assert digest_tree(root / "artifacts") == artifacts  # feature repo, frame, model
    assert registry_state() == before
    report = json.loads((root / "reports/validation/validation.json").read_text())
    assert report["success"] is False
    with get_client(sync_client=True) as client:
        artifacts_published = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    assert [a.key for a in artifacts_published] == [VALIDATION_ARTIFACT]


def test_training_crash_leaves_production_and_the_last_artifact_intact(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    params = copy_workspace(baseline, tmp_path / "ws")
    root = params.parent
    model = digest_tree(root / "artifacts/model")
    metrics = (root / "reports/metrics.json").read_bytes()
    before = registry_state()

    state = run_flow(params, *CRASH)  # the loss turns NaN after the first optimizer step
    assert state.is_failed()
    assert re.search(r"training loss became (nan|inf)", state.message)
    assert registry_state() == before
    assert digest_tree(root / "artifacts/model") == model  # the previous, complete model
    verify_artifact(root / "artifacts/model")
    assert leftovers(root / "artifacts") == []
    assert (root / "reports/metrics.json").read_bytes() == metrics  # evaluate never ran


def test_a_failed_candidate_fails_the_run_without_touching_production(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    """One candidate's task dies (its loss diverges); the others finish. The run fails
    before selection: no model is chosen, registered or promoted."""
    params = copy_workspace(baseline, tmp_path / "ws")
    root = params.parent
    model = digest_tree(root / "artifacts/model")
    selection = (root / "reports/candidates.json").read_bytes()
    before = registry_state()

    crash = "pipeline.candidates.llata-no-llm=[model.n_layers=0, train.lr=1e30]"
    state = run_flow(params, crash)
    assert state.is_failed()
    assert re.search(r"training loss became (nan|inf)", state.message)
    assert registry_state() == before
    assert digest_tree(root / "artifacts/model") == model
    assert (root / "reports/candidates.json").read_bytes() == selection
    assert leftovers(root / "artifacts") == []


def test_generated_data_trains_only_when_asked_and_is_never_promoted_over_real(
    baseline: dict[str, Any], tmp_path: Path
) -> None:
    """The defect found on a fresh clone with no data: the pipeline fell back to generated
    data, and its model was promoted over the real production model."""
    params = copy_workspace(baseline, tmp_path / "ws")
    root = params.parent
    (root / "data/raw/series.csv").unlink()  # nothing to pull: `sine` has no source here
    before = registry_state()

    state = run_flow(params)
    assert state.is_failed() and "not available" in state.message
    assert registry_state() == before

    request = RetrainRequest(
        params_file=str(params), overrides=BASELINE, allow_synthetic=True, force=True
    )
    state = retrain(request, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result.synthetic_data and not result.promoted
    assert "generated data" in result.reason
    assert Registry().production_tag() == before[0]
    last = Registry().history()[-1]
    assert last["action"] == "reject" and last["lineage_conflict"] == "synthetic"


def test_candidates_train_on_a_dask_cluster(
    baseline: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`pipeline.selection.runner.kind: dask` with a scheduler address: the candidate
    tasks run on that cluster's workers (here a LocalCluster of one worker process)."""
    from distributed import LocalCluster

    params = copy_workspace(baseline, tmp_path / "ws")
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))  # for the workers
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        state = run_flow(
            params,
            "pipeline.selection.runner.kind=dask",
            f"pipeline.selection.runner.address={cluster.scheduler_address}",
        )
        assert state.is_completed(), state.message
        # The scheduler ran the three candidate tasks (and nothing ran them elsewhere).
        prefixes = cluster.scheduler.task_prefixes.values()
        ran = sum(sum(p.state_counts.values()) for p in prefixes)
    assert ran >= 3
    result = state.result()
    check_candidates({c["candidate"]: c["val_mse"] for c in result.candidates})


@task
def _worker_threads() -> tuple[int, list[str]]:
    return os.getpid(), [thread.name for thread in threading.enumerate()]


def test_process_runner_workers_end_with_the_flow_process(prefect_api: str) -> None:
    """The default runner's candidate processes watch the flow's process, so a cancelled or
    killed flow run leaves no training behind (tests/test_worker_lifetime.py kills one)."""
    runner, _ = candidate_runner(RunnerParams(kind="process"), 1)

    @flow(task_runner=runner)
    def two_tasks() -> list[tuple[int, list[str]]]:
        return [future.result() for future in [_worker_threads.submit() for _ in range(2)]]

    reports = two_tasks()
    assert all(pid != os.getpid() for pid, _ in reports)
    assert all(WATCHER_THREAD in names for _, names in reports), reports


def test_two_promotions_racing_end_on_the_better_model(
    baseline: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two candidates promoted at once, with the flow's scorer, into an empty registry.

    Whatever the interleaving, production ends on the better one: either it wins first
    and the other is rejected, or the other wins first and is then beaten. The registry's
    own tests cover the lock itself.
    """
    good = Path(shutil.copytree(baseline["production"].path, tmp_path / "good"))
    cfg = load_pipeline_config(baseline["params"], overrides=[*BASELINE, *WORSE])
    ws = copy_workspace(baseline, tmp_path / "ws").parent
    from flows.selection_stages import train_stage

    cfg_worse = load_pipeline_config(ws / "params.yaml", overrides=[*BASELINE, *WORSE])
    train_stage(cfg_worse)
    bad = cfg_worse.layout.model_dir
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    good_tag = register_stage(cfg, good)
    bad_tag = register_stage(cfg, bad)

    decisions: list[Any] = []
    errors: list[BaseException] = []

    def promote(tag: str) -> None:
        try:
            decisions.append(promote_stage(cfg, tag))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=promote, args=(tag,)) for tag in (bad_tag, good_tag)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    registry = Registry()
    assert registry.production_tag() == good_tag
    history = registry.history()
    promotions = [h for h in history if h["action"] == "promote"]
    assert len(history) == 2 and 1 <= len(promotions) <= 2
    aliases = json.loads(registry.aliases_path.read_text())
    assert aliases["revision"] == len(promotions)
    assert aliases["previous"] in (None, bad_tag)


def test_rollback_restores_the_previous_model(baseline: dict[str, Any]) -> None:
    production = baseline["production"]
    cfg = load_pipeline_config(baseline["params"], overrides=list(BASELINE))
    other = register_stage(cfg, baseline["root"] / "artifacts/model")
    assert main(["registry", "promote", other, "--force"]) == 0
    assert Registry().production_tag() == other

    assert main(["registry", "rollback"]) == 0
    registry = Registry()
    assert registry.production_tag() == production.tag
    assert registry.get("previous").tag == other
    restored = Forecaster.load(registry.production().path)
    original = Forecaster.load(production.path)
    window = np.random.default_rng(0).normal(size=(restored.input_size, len(restored.channels)))
    np.testing.assert_array_equal(restored.predict(window), original.predict(window))


# --------------------------------------------------------------------------- deployments


def test_scheduled_deployment_uses_the_cron_from_params(
    prefect_api: str, baseline: dict[str, Any]
) -> None:
    cfg = load_pipeline_config(baseline["params"])
    request = RetrainRequest(params_file=str(baseline["params"]), profile="quick")
    deployment_id = build_deployment(cfg, request, name="test-schedule").apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.entrypoint == "flows.retrain.retrain"
    assert [s.schedule.cron for s in deployment.schedules] == [cfg.params.schedule.cron]
    assert deployment.schedules[0].schedule.timezone == cfg.params.schedule.timezone
    assert deployment.parameters["request"]["profile"] == "quick"


def test_prefect_yaml_deploys_to_a_cpu_and_a_gpu_pool(prefect_api: str, tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    pipeline = yaml.safe_load((REPO / "params.yaml").read_text())["pipeline"]
    schedules = {
        "flows/retrain.py:retrain": pipeline["schedule"],
        "flows/recalibrate.py:recalibrate": pipeline["recalibration"]["schedule"],
    }
    retraining = [d for d in spec["deployments"] if d["entrypoint"] == "flows/retrain.py:retrain"]
    pools = {d["work_pool"]["name"]: d for d in retraining}
    assert set(pools) == {"llata-cpu", "llata-gpu"}
    for deployment in spec["deployments"]:
        (entry,) = deployment["schedules"]
        schedule = schedules[deployment["entrypoint"]]
        assert (entry["cron"], entry["timezone"]) == (schedule["cron"], schedule["timezone"])
    gpu_env = pools["llata-gpu"]["work_pool"]["job_variables"]["env"]
    assert gpu_env["CUDA_VISIBLE_DEVICES"] == "0"

    with get_client(sync_client=True) as client:
        for name in pools:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "LLATA_PROJECT_DIR": str(REPO),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        gpu = client.read_deployment_by_name("retrain/retrain-gpu")
        cpu = client.read_deployment_by_name("retrain/retrain-cpu")
        recal = client.read_deployment_by_name("recalibrate/recalibrate-cpu")
    assert recal.work_pool_name == "llata-cpu" and [s.active for s in recal.schedules] == [True]
    assert gpu.work_pool_name == "llata-gpu"
    assert gpu.job_variables["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    assert [s.active for s in gpu.schedules] == [True]
    assert [s.active for s in cpu.schedules] == [False]
    assert gpu.pull_steps[0]["prefect.deployments.steps.set_working_directory"]["directory"]


# --------------------------------------------------------------------------- recalibration

# The drifted tail is 240 rows; these windows lie inside it (input 32 + horizon 8 rows each).
RECALIBRATION = (
    "pipeline.recalibration.recent_windows=96",
    "pipeline.recalibration.holdout_windows=48",
)


def drifted_workspace(baseline: dict[str, Any], dest: Path) -> Path:
    """A copy of the module workspace whose raw file gained 240 newer rows, six times
    noisier than the rows production was trained and calibrated on (drift)."""
    params = copy_workspace(baseline, dest)
    raw = params.parent / "data/raw/series.csv"
    frame = pd.read_csv(raw)
    newer = sine_frame(len(frame) + 240).iloc[len(frame) :].copy()
    channels = [c for c in newer.columns if c != "date"]
    noise = np.random.default_rng(7).normal(0.0, 0.3, size=(len(newer), len(channels)))
    newer[channels] += noise
    newer["date"] = newer["date"].dt.strftime("%Y-%m-%d %H:%M:%S")
    pd.concat([frame, newer], ignore_index=True).to_csv(raw, index=False)
    return params


@pytest.fixture
def private_registry(
    bentoml_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    """A copy of the module registry (production: the main job's model), so that what a
    recalibration promotes stays out of the other tests."""
    home = shutil.copytree(bentoml_home, tmp_path / "bentoml")
    monkeypatch.setenv("BENTOML_HOME", str(home))
    return Registry()


def run_recalibration(params: Path, *overrides: str) -> Any:
    request = RecalibrateRequest(params_file=str(params), overrides=(*RECALIBRATION, *overrides))
    return recalibrate(request, return_state=True)


def test_recalibration_registers_and_promotes_new_scores_of_the_same_model(
    baseline: dict[str, Any], private_registry: Registry, tmp_path: Path
) -> None:
    production = private_registry.production()
    assert production is not None
    params = drifted_workspace(baseline, tmp_path / "ws")

    state = run_recalibration(params)
    assert state.is_completed(), state.message
    result = state.result()
    assert isinstance(result, RecalibrateResult)
    assert result.parent == production.tag
    assert (result.calibration_windows, result.holdout_windows) == (96, 48)
    # Production's validation-split scores under-cover the noisier newest windows; the
    # recalibrated ones, fitted on the windows just before them, come closer to 80 %.
    assert result.replaced is not None and result.replaced["coverage_80"] < 0.75
    assert abs(result.holdout["coverage_80"] - 0.8) < abs(result.replaced["coverage_80"] - 0.8)
    assert result.promoted, result.reason
    assert "point metrics not compared" in result.reason

    registry = Registry()
    assert registry.production_tag() == result.production == result.candidate
    assert registry.get("previous").tag == production.tag
    version = registry.get(result.candidate)
    record = version.metadata["recalibration"]
    assert record["parent"] == production.tag
    assert record["data"] == "data/raw/series.csv"
    assert record["replaced"] == result.replaced and record["holdout"] == result.holdout
    for key in ("data_lineage", "params", "selection", "eval_split_hash", "candidate"):
        assert version.metadata[key] == production.metadata[key], key
    assert version.metrics["coverage_80"] == result.holdout["coverage_80"]
    assert version.metrics["mse"] == production.metrics["mse"]  # the same point model
    assert version.metrics["calibration_data_sha256"] != production.metadata["raw_data_sha256"]
    history = registry.history()[-1]
    assert history["action"] == "promote" and history["recalibration_of"] == production.tag

    # Same weights, hence the same point forecasts; new, wider scores.
    old, new = Forecaster.load(production.path), Forecaster.load(version.path)
    assert old.intervals is not None and new.intervals is not None
    window = np.random.default_rng(0).normal(size=(new.input_size, len(new.channels)))
    np.testing.assert_array_equal(new.predict(window), old.predict(window))
    assert new.intervals.split == "recent" and new.intervals.n == 96
    assert new.intervals.half_width(80).mean() > old.intervals.half_width(80).mean()
    # ACI (`pipeline.recalibration.aci_gamma`): the trial's miss rate on the holdout moved
    # the 80 % level from nominal.
    gamma = version.metrics["aci_gamma"]
    assert gamma == RecalibrationParams().aci_gamma > 0
    assert new.intervals.effective_levels[80.0] == pytest.approx(
        80.0 + 100 * gamma * (1 - result.holdout["coverage_80"] - 0.2)
    )
    verify_artifact(production.path)  # production's stored copy was never written

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    (table,) = [a for a in artifacts if a.key == RECALIBRATION_ARTIFACT]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    coverage = {r["metric"]: r for r in rows}["coverage_80"]
    assert coverage["recalibrated"] == pytest.approx(result.holdout["coverage_80"])
    assert coverage["production"] == pytest.approx(result.replaced["coverage_80"])
    assert "promoted to production" in table.description


def test_failed_recalibration_leaves_production_untouched(
    prefect_api: str,
    baseline: dict[str, Any],
    private_registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    params = drifted_workspace(baseline, tmp_path / "ws")
    before = registry_state()

    state = run_recalibration(params, "pipeline.recalibration.recent_windows=100000")
    assert state.is_failed()
    assert "rows" in state.message and "need" in state.message  # too short for the windows
    assert registry_state() == before

    raw = params.parent / "data/raw/series.csv"
    frame = pd.read_csv(raw)
    frame.loc[len(frame) - 40 :, "c1"] = np.nan  # the newest rows lost a sensor
    frame.to_csv(raw, index=False)
    state = run_recalibration(params)
    assert state.is_failed() and "nan_share" in state.message
    assert registry_state() == before

    # The command: no production model is a clear error, exit code 1.
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)  # the harness, not a server of its own
    assert main(["pipeline", "recalibrate", "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert "no production version of llata-forecaster" in err and "Traceback" not in err
    assert "production model unchanged" in err
    assert Registry().list_versions() == []


def test_recalibration_deployment_uses_the_daily_cron_from_params(
    prefect_api: str, baseline: dict[str, Any]
) -> None:
    cfg = load_pipeline_config(baseline["params"])
    schedule = cfg.params.recalibration.schedule
    assert schedule is not None and schedule.cron == "0 5 * * *"  # params.yaml's daily cron
    request = RecalibrateRequest(params_file=str(baseline["params"]))
    deployment = build_recalibrate_deployment(cfg, request, name="test-recalibrate")
    assert deployment is not None
    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment.apply())
    assert stored.entrypoint == "flows.recalibrate.recalibrate"
    assert [s.schedule.cron for s in stored.schedules] == [schedule.cron]
    assert stored.schedules[0].schedule.timezone == schedule.timezone
    assert stored.parameters["request"]["params_file"] == str(baseline["params"])

    unscheduled = ["pipeline.recalibration.schedule=null"]
    off = load_pipeline_config(baseline["params"], overrides=unscheduled)
    assert build_recalibrate_deployment(off, request) is None
