"""The BentoML service against a real `bentoml serve` process on 127.0.0.1.

One server runs for the whole module (tiny tiny-gpt2 artifacts, version "a" calibrated for
prediction intervals and "b" not, a private BENTOML_HOME and registry, a Feast repo for
/forecast_series, a bearer token and small request limits). The
registry starts empty, so the server's first answers are the 503s of "no production model";
the tests then promote versions through the registry, as the pipeline does, and watch the
server follow: every worker answering once one is ready, a hot swap under concurrent load,
and versions read half-written, refused and then served once whole.

The helpers that start a server (`serve`, `server_env`, `build_artifacts`, ...) are shared
with tests/test_service_contract.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
import torch

from llata_core.backbone import prepare_backbone
from llata_core.config import config_from_dict
from llata_core.data import Scaler
from llata_core.forecaster import Forecaster, save_artifact
from llata_core.intervals import ConformalScores
from llata_core.model import LlataModel
from serving.registry import Registry
from tests.conftest import tiny_overrides

CHANNELS = ("a", "b", "c")
INPUT_SIZE, HORIZON = 32, 8  # tiny_overrides
TOKEN = "test-token-4f9d"
MAX_BYTES, MAX_STEPS, MAX_CHANNELS, MAX_HORIZON = 65_536, 200, 16, 64
MAX_WINDOWS = 4  # per /forecast_batch request
POLL_SECONDS = 0.3
START_TIMEOUT = 120.0
SERIES = ("north", "south")
VERSIONS = ("a", "b")
CALIBRATED = "a"  # "b" has no conformal scores: it refuses levels
CALIBRATION_WINDOWS = 199  # levels up to 99.5 % are answerable
WORKERS = 2  # each worker process watches the registry and swaps on its own
MEAN, STD = np.array([10.0, -2.0, 0.5]), np.array([2.0, 0.5, 3.0])


@dataclass
class Server:
    url: str
    registry: Registry
    artifacts: dict[str, Path]
    log: Path
    frame: pd.DataFrame
    before_promotion: dict[str, requests.Response] = field(default_factory=dict)
    right_after_ready: list[requests.Response] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    def session(self, token: str | None = TOKEN) -> requests.Session:
        s = requests.Session()
        if token is not None:
            s.headers["Authorization"] = f"Bearer {token}"
        return s

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def calibration_scores() -> ConformalScores:
    """Conformal scores as a calibration would store them, with residuals that grow along
    the horizon (as a real model's do)."""
    rng = np.random.default_rng(11)
    growth = np.linspace(0.5, 1.5, HORIZON)[None, :, None]  # [1, H, 1]
    residuals = rng.normal(size=(CALIBRATION_WINDOWS, HORIZON, len(CHANNELS))) * growth
    return ConformalScores.from_residuals(
        residuals, data_fingerprint="test-data", calibrated_at="2024-01-02T00:00:00+00:00"
    )


def build_artifacts(root: Path) -> dict[str, Path]:
    """Two untrained tiny models with different random weights, so every answer shows
    which version made it; CALIBRATED carries conformal scores, the other none."""
    cfg = config_from_dict(tiny_overrides("tiny-gpt2"))
    artifacts = {}
    for seed, name in enumerate(VERSIONS):
        torch.manual_seed(seed)
        model = LlataModel(cfg, prepare_backbone(cfg.model)).eval().to_inference()
        artifacts[name] = save_artifact(
            root / name,
            model,
            Scaler(CHANNELS, MEAN, STD),
            {"mse": 0.5, "mae": 0.4},
            metadata={"data_sha256": f"hash-{name}", "trained_at": "2024-01-01T00:00:00+00:00"},
            intervals=calibration_scores() if name == CALIBRATED else None,
        )
    return artifacts


COMBINATION_LOOKBACK = INPUT_SIZE + 8  # its DLinear member's; the store holds that many rows
COMBINATION_WEIGHT = 0.6  # of version "a", the LLaTA member


def build_combination(root: Path, artifacts: dict[str, Path]) -> Path:
    """Version "a" (LLaTA, lookback 32) and an untrained DLinear of a longer lookback,
    weighted 0.6 / 0.4, with the combination's own conformal scores."""
    from llata_core.baselines import build_baseline
    from llata_core.combination import Combination, Member
    from llata_core.forecaster import save_combination

    cfg = config_from_dict(
        tiny_overrides(model__kind="dlinear", data__input_size=COMBINATION_LOOKBACK)
    )
    torch.manual_seed(7)
    scaler = Scaler(CHANNELS, MEAN, STD)
    dlinear = save_artifact(
        root / "dlinear", build_baseline(cfg).to_inference(), scaler, {"mse": 0.6}
    )
    members = [("a", artifacts["a"]), ("dlinear", dlinear)]
    loaded = [Forecaster.load(path) for _, path in members]
    model = Combination(
        [Member(n, fc.model, fc.scaler) for (n, _), fc in zip(members, loaded, strict=True)],
        (COMBINATION_WEIGHT, 1.0 - COMBINATION_WEIGHT),
    )
    return save_combination(
        root / "combo",
        members,
        model.weights,
        model.cfg,
        scaler,
        {"mse": 0.45, "mae": 0.35},
        metadata={"data_sha256": "hash-combo", "trained_at": "2024-01-01T00:00:00+00:00"},
        intervals=calibration_scores(),
    )


def _series_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    parts = []
    for series_id in SERIES:
        parts.append(
            pd.DataFrame(
                {
                    "date": pd.date_range("2024-03-01", periods=INPUT_SIZE + 8, freq="h"),
                    "series_id": series_id,
                    **{
                        c: rng.normal(MEAN[i], STD[i], INPUT_SIZE + 8)
                        for i, c in enumerate(CHANNELS)
                    },
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(
    url: str, status: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}")
        # The arbiter holds the socket before the worker is up: a request may hang, then time out.
        with contextlib.suppress(requests.ConnectionError, requests.Timeout):
            if requests.get(url, timeout=5).status_code == status:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (arbiter and workers), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def server_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of a test server: a private BENTOML_HOME, tiny limits, fp32."""
    return {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "HF_HUB_OFFLINE": "1",
        "LLATA_MAX_REQUEST_BYTES": str(MAX_BYTES),
        "LLATA_MAX_STEPS": str(MAX_STEPS),
        "LLATA_MAX_CHANNELS": str(MAX_CHANNELS),
        "LLATA_MAX_HORIZON": str(MAX_HORIZON),
        "LLATA_MAX_WINDOWS": str(MAX_WINDOWS),
        "LLATA_POLL_SECONDS": str(POLL_SECONDS),
        "LLATA_TORCH_THREADS": "1",
        "LLATA_WORKERS": str(WORKERS),
        # fp32: answers are compared with the artifact's in-process fp32 forecasts.
        "LLATA_PRECISION": "fp32",
        **settings,
    }


@contextlib.contextmanager
def serve(env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`bentoml serve serving.service:Forecaster` on a free port; yields (url, process) once
    a worker accepts connections, and stops the whole process group on exit."""
    port = _free_port()
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # No --host: the service must bind 127.0.0.1 by itself (tested below).
            [str(bentoml_cli), "serve", "serving.service:Forecaster", "--port", str(port)],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/livez", 200, START_TIMEOUT, proc)
        yield url, proc
    except BaseException:
        print("\n".join(log.read_text(errors="replace").splitlines()[-60:]), file=sys.stderr)
        raise
    finally:
        _stop(proc)


def prepare_series_repo(root: Path) -> pd.DataFrame:
    """A Feast repo at `root` holding the windows of SERIES; returns their rows."""
    from features.store import prepare_feature_repo
    from features.validation import FrameSpec

    frame = _series_frame()
    # As long a window as the longest lookback served (the combination's DLinear member).
    prepare_feature_repo(
        root,
        frame,
        FrameSpec(min_rows=COMBINATION_LOOKBACK, series_column="series_id"),
        COMBINATION_LOOKBACK,
    )
    return frame


def concurrently(calls: list[Any]) -> list[Any]:
    """Runs the callables at once, one thread each; their results in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serving")
    home = root / "bentoml"
    artifacts = build_artifacts(root / "artifacts")
    artifacts["combo"] = build_combination(root / "artifacts", artifacts)
    frame = prepare_series_repo(root / "feature_repo")
    with pytest.MonkeyPatch.context() as patch:
        # BentoML stages new models under tempfile's dir and posts usage events by default.
        patch.setenv("BENTOML_DO_NOT_TRACK", "True")
        patch.setattr(tempfile, "tempdir", str(root))
        registry = Registry(bentoml_home=home)
        env = server_env(
            home,
            LLATA_FEATURE_REPO=str(root / "feature_repo"),
            LLATA_API_TOKEN=TOKEN,
            # A refused version is retried after 0.3, 0.6, 1.2, 2 s, then every 2 s.
            LLATA_MAX_RETRY_SECONDS="2",
        )
        log = root / "server.log"
        with serve(env, log) as (url, proc):
            srv = Server(url, registry, artifacts, log, frame)
            # Before any promotion: record what the server answers, then promote version "a".
            s = srv.session()
            srv.before_promotion = {
                "readyz": s.get(f"{srv.url}/readyz"),
                "model": s.get(f"{srv.url}/model"),
                "forecast": s.post(f"{srv.url}/forecast", json={"history": _history(40).tolist()}),
                "forecast_series": s.post(
                    f"{srv.url}/forecast_series", json={"series_id": "north"}
                ),
            }
            srv.versions["a"] = _promote(srv, "a")
            _wait_for(f"{srv.url}/readyz", 200, 30, proc)
            # One worker said ready; the others may not have polled yet. Requests that reach
            # them right now must not get 503 (they check the registry themselves).
            body = {"history": _history(40).tolist()}
            srv.right_after_ready = concurrently(
                [lambda: srv.session().post(f"{srv.url}/forecast", json=body, timeout=120)]
                * (4 * WORKERS)
            )
            _wait_serving(srv, srv.versions["a"])
            yield srv


def _promote(srv: Server, name: str) -> str:
    tag = srv.registry.register(srv.artifacts[name], metadata={"eval_split_hash": "s"})
    srv.registry.promote(tag, score=None, margin=0.0, force=True)
    return tag.split(":", 1)[1]


def _history(steps: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(MEAN, STD, size=(steps, len(CHANNELS)))


def _metric(text: str, name: str, **labels: str) -> float:
    """Sum of the Prometheus samples `name{...}` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name or not all(f'{k}="{v}"' in head for k, v in labels.items()):
            continue
        total += float(value)
    return total


def wait_serving(url: str, version: str, workers: int = WORKERS, timeout: float = 60) -> None:
    """Waits until every worker serves `version` (each polls the registry on its own)."""
    deadline = time.monotonic() + timeout
    serving = 0.0
    while time.monotonic() < deadline:
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        serving = _metric(metrics, "llata_model_serving", version=version)
        if serving == workers:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{serving:.0f} of {workers} workers serve {version}")


def _wait_serving(srv: Server, version: str) -> None:
    try:
        wait_serving(srv.url, version)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}:\n{srv.log_tail()}") from None


# --------------------------------------------------------------------------- tests


def test_no_production_model_answers_503_with_the_reason(server: Server) -> None:
    answers = server.before_promotion
    assert answers["readyz"].status_code == 503
    for name in ("model", "forecast", "forecast_series"):
        assert answers[name].status_code == 503, name
        assert "no production model" in answers[name].json()["error"], name
    assert answers["forecast"].headers["Retry-After"] == "5"


def test_every_worker_answers_once_one_is_ready(server: Server) -> None:
    """The requests sent the moment the first worker's /readyz said 200 (see the fixture):
    the workers that had not polled the registry yet loaded the model for them."""
    answers = server.right_after_ready
    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers]
    assert {r.json()["model_version"] for r in answers} == {server.versions["a"]}


def test_forecast_answers_in_data_units_like_the_artifact(server: Server) -> None:
    history = _history(45)  # longer than input_size: the last 32 rows are used
    start = pd.Timestamp("2024-05-01T00:00:00")
    stamps = [(start + pd.Timedelta(hours=i)).isoformat() for i in range(len(history))]

    r = server.session().post(
        f"{server.url}/forecast", json={"history": history.tolist(), "timestamps": stamps}
    )

    assert r.status_code == 200, r.text
    body = r.json()
    expected = Forecaster.load(server.artifacts["a"]).predict(history)
    np.testing.assert_allclose(np.array(body["forecast"]), expected, rtol=1e-5, atol=1e-5)
    assert body["channels"] == list(CHANNELS) and body["horizon"] == HORIZON
    assert body["model_version"] == server.versions["a"]
    assert body["timestamps"][0] == "2024-05-02T21:00:00"  # 45 hours after the first stamp
    expected_stamps = pd.date_range("2024-05-02T21:00:00", periods=HORIZON, freq="h")
    assert body["timestamps"] == [ts.isoformat() for ts in expected_stamps]


def test_longer_horizon_is_rolled_out(server: Server) -> None:
    history = _history(32, seed=1)

    r = server.session().post(
        f"{server.url}/forecast", json={"history": history.tolist(), "horizon": 20}
    )

    assert r.status_code == 200, r.text
    expected = Forecaster.load(server.artifacts["a"]).predict(history, horizon=20)
    np.testing.assert_allclose(np.array(r.json()["forecast"]), expected, rtol=1e-4, atol=1e-4)


def test_forecast_series_reads_the_online_store(server: Server) -> None:
    s = server.session()
    rows = server.frame[server.frame["series_id"] == "south"]
    window = rows[list(CHANNELS)].to_numpy()[-INPUT_SIZE:]

    r = s.post(f"{server.url}/forecast_series", json={"series_id": "south", "horizon": 5})
    direct = s.post(f"{server.url}/forecast", json={"history": window.tolist(), "horizon": 5})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["series_id"] == "south"
    assert pd.Timestamp(body["window_end"]) == rows["date"].iloc[-1].tz_localize("UTC")
    np.testing.assert_allclose(body["forecast"], direct.json()["forecast"], rtol=1e-6)


def test_model_endpoint_describes_production(server: Server) -> None:
    r = server.session().get(f"{server.url}/model")

    assert r.status_code == 200, r.text
    info = r.json()
    assert info["model_version"] in server.versions.values()
    assert info["tag"] == f"llata-forecaster:{info['model_version']}"
    assert info["backbone"] == "tiny-gpt2" and info["precision"] == "fp32"
    assert (info["input_size"], info["horizon"], info["channels"]) == (32, 8, list(CHANNELS))
    assert info["metrics"] == {"mse": 0.5, "mae": 0.4}
    assert info["data_sha256"].startswith("hash-") and info["trained_at"].startswith("2024-01-01")
    calibrated = info["data_sha256"] == f"hash-{CALIBRATED}"
    assert info["intervals"] == (
        {
            "method": "split-conformal-absolute-residual",
            "split": "val",
            "n_windows": CALIBRATION_WINDOWS,
            "horizon": HORIZON,
            "data_fingerprint": "test-data",
            "calibrated_at": "2024-01-02T00:00:00+00:00",
            "effective_levels": None,
        }
        if calibrated
        else None
    )


def _serve(server: Server, name: str) -> str:
    """Makes artifact `name` the production model on every worker, unless it already is;
    returns the version served."""
    info = server.session().get(f"{server.url}/model").json()
    version = str(info["model_version"])
    if info["data_sha256"] != f"hash-{name}":
        version = server.versions[name] = _promote(server, name)
    _wait_serving(server, version)
    return version


def _bounds(body: dict[str, Any]) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    return {i["level"]: (np.array(i["lower"]), np.array(i["upper"])) for i in body["intervals"]}


def test_levels_answer_bounds_around_the_forecast(server: Server) -> None:
    version = _serve(server, CALIBRATED)
    history = _history(40, seed=2)
    s = server.session()

    r = s.post(f"{server.url}/forecast", json={"history": history.tolist(), "levels": [95, 80]})
    plain = s.post(f"{server.url}/forecast", json={"history": history.tolist()})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == version
    assert [i["level"] for i in body["intervals"]] == [95, 80]  # in the order asked
    assert "intervals" not in plain.json()
    point = np.array(body["forecast"])
    np.testing.assert_allclose(point, plain.json()["forecast"], rtol=1e-6)
    bounds = _bounds(body)
    expected = Forecaster.load(server.artifacts[CALIBRATED]).predict(history, levels=(80, 95))
    for level, (lower, upper) in bounds.items():
        assert lower.shape == upper.shape == point.shape == (HORIZON, len(CHANNELS))
        assert (lower <= point).all() and (point <= upper).all(), level
        np.testing.assert_allclose(lower, expected.lower[level], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(upper, expected.upper[level], rtol=1e-5, atol=1e-5)
    assert (bounds[95][0] <= bounds[80][0]).all() and (bounds[80][1] <= bounds[95][1]).all()
    # In data units: a channel's width scales with its std. The calibration's residuals grow
    # along the horizon, so should the widths (on average; not step by step).
    width = (bounds[80][1] - bounds[80][0]) / STD  # [H, M], scaled units
    assert width[-3:].mean() > width[:3].mean()


def test_forecast_series_answers_levels_like_forecast(server: Server) -> None:
    _serve(server, CALIBRATED)
    s = server.session()
    rows = server.frame[server.frame["series_id"] == "north"]
    window = rows[list(CHANNELS)].to_numpy()[-INPUT_SIZE:]

    r = s.post(
        f"{server.url}/forecast_series",
        json={"series_id": "north", "horizon": 4, "levels": [90]},
    )
    direct = s.post(
        f"{server.url}/forecast",
        json={"history": window.tolist(), "horizon": 4, "levels": [90]},
    )

    assert r.status_code == 200, r.text
    assert r.json()["intervals"][0]["level"] == 90
    np.testing.assert_allclose(
        _bounds(r.json())[90], _bounds(direct.json())[90], rtol=1e-6, atol=1e-6
    )
    assert np.array(r.json()["intervals"][0]["upper"]).shape == (4, len(CHANNELS))


BAD_LEVELS: dict[str, tuple[Any, str]] = {
    # name: (levels, fragment of the message)
    "zero": ([0], "outside (0, 100)"),
    "hundred": ([80, 100], "outside (0, 100)"),
    "negative": ([-5], "outside (0, 100)"),
    "a fraction": ([0.8], "looks like a fraction"),
    "repeated": ([80, 95, 80.0], "interval level 80 is given twice"),
    "too many": ([10, 20, 30, 40, 50, 60], "at most 5 items"),
    "none": ([], "at least 1 item"),
    "a string": (["80"], "valid number"),
    "not a list": (80, "valid array"),
}


@pytest.mark.parametrize("case", sorted(BAD_LEVELS))
def test_bad_levels_get_400_naming_the_problem(server: Server, case: str) -> None:
    levels, fragment = BAD_LEVELS[case]

    r = server.session().post(f"{server.url}/forecast", json={"history": GOOD, "levels": levels})
    series = server.session().post(
        f"{server.url}/forecast_series", json={"series_id": "north", "levels": levels}
    )

    assert r.status_code == 400, r.text
    assert any(fragment in d["msg"] and d["loc"][0] == "levels" for d in r.json()["detail"])
    assert series.status_code == 400, series.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"horizon": HORIZON + 1}, f"calibrated for {HORIZON} steps"),
        ({"levels": [99.9]}, f"calibrated on {CALIBRATION_WINDOWS}"),
    ],
)
def test_levels_the_calibration_cannot_answer_get_422(
    server: Server, body: dict[str, Any], fragment: str
) -> None:
    _serve(server, CALIBRATED)
    request = {"levels": [80], **body}

    r = server.session().post(f"{server.url}/forecast", json={"history": GOOD, **request})
    series = server.session().post(
        f"{server.url}/forecast_series", json={"series_id": "north", **request}
    )
    without_levels = {k: v for k, v in request.items() if k != "levels"}
    plain = server.session().post(
        f"{server.url}/forecast", json={"history": GOOD, **without_levels}
    )

    assert r.status_code == 422, r.text
    assert fragment in r.json()["error"]
    assert series.status_code == 422 and fragment in series.json()["error"]  # not a 409
    assert plain.status_code == 200, plain.text  # the same request without levels is answered


def test_health_and_metrics_stay_open_other_endpoints_need_the_token(server: Server) -> None:
    anonymous = server.session(token=None)
    for path in ("/livez", "/readyz", "/metrics"):
        assert anonymous.get(f"{server.url}{path}").status_code == 200, path
    body = {"history": _history().tolist()}
    missing = anonymous.post(f"{server.url}/forecast", json=body)
    wrong = server.session(token="not-the-token").post(f"{server.url}/forecast", json=body)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"]
    assert wrong.status_code == 401 and "invalid bearer token" in wrong.json()["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/model", "/docs.json"):
        assert anonymous.get(f"{server.url}{path}").status_code == 401, path
    assert (
        anonymous.post(f"{server.url}/forecast_series", json={"series_id": "north"}).status_code
        == 401
    )


def _rows(steps: int, channels: int, value: float = 1.0) -> list[list[float]]:
    return np.full((steps, channels), value).tolist()


def _stamps(n: int, freq: str = "h") -> list[str]:
    return [ts.isoformat() for ts in pd.date_range("2024-01-01", periods=n, freq=freq)]


GOOD = _rows(40, 3)
BAD_JSON_BODIES: dict[str, tuple[str, int, str]] = {
    # name: (raw body, status, fragment of the message)
    "nan literal": (
        '{"history": [[1.0, 2.0, NaN]' + ", [1, 2, 3]" * 39 + "]}",
        400,
        "finite number",
    ),
    "infinity literal": ('{"history": [[1.0, Infinity, 3.0]]}', 400, "finite number"),
    "overflowing number": ('{"history": [[1.0, 1e999, 3.0]]}', 400, "finite number"),
    "malformed json": ('{"history": [[1.0, 2.0, 3.0]', 400, "Invalid JSON"),
    "empty body": ("", 400, "Field required"),
    "array body": ("[1, 2, 3]", 400, "Input should be an object"),
}
BAD_BODIES: dict[str, tuple[dict[str, Any], int, str]] = {
    "not 2-d": ({"history": [1.0, 2.0, 3.0]}, 400, "Input should be a valid array"),
    "strings": ({"history": [["1", "x", "3"]]}, 400, "valid number"),
    "booleans": ({"history": [[True, 1.0, 2.0]]}, 400, "valid number"),
    "ragged rows": (
        {"history": [*GOOD[:-1], [1.0, 2.0]]},
        400,
        "ragged: row 0 has 3 values, row 39 has 2",
    ),
    "empty history": ({"history": []}, 400, "at least 1 item"),
    "empty rows": ({"history": [[]] * 40}, 400, "at least 1 item"),
    "wrong channel count": (
        {"history": _rows(40, 4)},
        422,
        "4 channels, the model expects 3 (a, b, c)",
    ),
    "too short": ({"history": _rows(10, 3)}, 422, "10 steps, the model needs at least 32"),
    "too many channels": (
        {"history": _rows(40, MAX_CHANNELS + 1)},
        400,
        f"at most {MAX_CHANNELS} items",
    ),
    "too many steps": ({"history": _rows(MAX_STEPS + 1, 3)}, 400, f"at most {MAX_STEPS} items"),
    "horizon too long": ({"history": GOOD, "horizon": MAX_HORIZON + 1}, 400, "less than or equal"),
    "horizon zero": ({"history": GOOD, "horizon": 0}, 400, "greater than or equal to 1"),
    "horizon not an integer": ({"history": GOOD, "horizon": 2.5}, 400, "valid integer"),
    "horizon as a string": ({"history": GOOD, "horizon": "3"}, 400, "valid integer"),
    "unknown field": ({"history": GOOD, "horizn": 3}, 400, "Extra inputs are not permitted"),
    "timestamps count": (
        {"history": GOOD, "timestamps": _stamps(39)},
        422,
        "one timestamp per row",
    ),
    "timestamps unparsable": ({"history": GOOD, "timestamps": ["soon"] * 40}, 422, "ISO 8601"),
    "timestamps irregular": (
        {"history": GOOD, "timestamps": [*_stamps(39), "2024-03-01T00:00:00"]},
        422,
        "not evenly spaced",
    ),
    "timestamps decreasing": (
        {"history": GOOD, "timestamps": _stamps(40)[::-1]},
        422,
        "must increase",
    ),
    "values too large for the model": (
        {"history": (np.where(np.arange(40)[:, None] % 2, 1e300, -1e300) * np.ones(3)).tolist()},
        422,
        "not finite",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_forecast_inputs_get_4xx_naming_the_problem(server: Server, case: str) -> None:
    body, status, fragment = BAD_BODIES[case]

    r = server.session().post(f"{server.url}/forecast", json=body)

    assert r.status_code == status, r.text
    assert fragment in r.json()["error"] or any(fragment in d["msg"] for d in r.json()["detail"])


@pytest.mark.parametrize("case", sorted(BAD_JSON_BODIES))
def test_bad_json_gets_400(server: Server, case: str) -> None:
    raw, status, fragment = BAD_JSON_BODIES[case]

    r = server.session().post(
        f"{server.url}/forecast", data=raw, headers={"Content-Type": "application/json"}
    )

    assert r.status_code == status, r.text
    assert fragment in r.text


def test_oversized_and_non_json_bodies_are_refused_before_parsing(server: Server) -> None:
    s = server.session()
    big = json.dumps({"history": _rows(MAX_STEPS, 3), "pad": "x" * MAX_BYTES})
    declared = s.post(
        f"{server.url}/forecast", data=big, headers={"Content-Type": "application/json"}
    )
    chunked = s.post(
        f"{server.url}/forecast",
        data=(big[i : i + 8192].encode() for i in range(0, len(big), 8192)),  # no Content-Length
        headers={"Content-Type": "application/json"},
    )
    form = s.post(f"{server.url}/forecast", data={"history": "1"})

    assert declared.status_code == 413 and f"limit of {MAX_BYTES} bytes" in declared.json()["error"]
    assert chunked.status_code == 413, chunked.text
    assert form.status_code == 415 and "application/json" in form.json()["error"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"series_id": "atlantis"}, 404, "no context window for series 'atlantis'"),
        ({"series_id": ""}, 400, "at least 1 character"),
        ({"series": "north"}, 400, "Field required"),
    ],
)
def test_bad_series_requests_get_4xx(
    server: Server, body: dict[str, Any], status: int, fragment: str
) -> None:
    r = server.session().post(f"{server.url}/forecast_series", json=body)

    assert r.status_code == status, r.text
    assert fragment in r.text


def test_hot_swap_under_concurrent_requests(server: Server) -> None:
    """Threads hammer /forecast while version "b" is promoted: no request fails, every
    answer is the forecast of the version its `model_version` names, and each thread sees
    the switch once and never goes back. Meanwhile the model calls were batched."""
    old = _wait_current(server)
    history = _history(32, seed=7)
    expected = {name: Forecaster.load(server.artifacts[name]).predict(history) for name in VERSIONS}
    assert not np.allclose(expected["a"], expected["b"], atol=1e-3)
    batches_before = batch_stats(server.url)
    stop = threading.Event()
    seen: list[list[tuple[str, np.ndarray]]] = [[] for _ in range(6)]
    failures: list[str] = []

    def hammer(i: int) -> None:
        s = server.session()
        while not stop.is_set():
            try:
                r = s.post(f"{server.url}/forecast", json={"history": history.tolist()}, timeout=30)
            except requests.RequestException as exc:
                failures.append(repr(exc))
                continue
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text}")
                continue
            body = r.json()
            seen[i].append((body["model_version"], np.array(body["forecast"])))

    def until(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            assert not failures, failures[:5]
            time.sleep(0.05)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(len(seen))]
    for t in threads:
        t.start()
    try:
        until(lambda: all(len(answers) >= 3 for answers in seen), "every thread has answers")
        new = _promote(server, "b")
        server.versions["b"] = new
        until(
            lambda: (
                all(answers[-1][0] == new for answers in seen)
                and all(sum(v == new for v, _ in answers) >= 3 for answers in seen)
            ),
            "every thread has answers from the new version",
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    assert not failures, failures[:5]
    by_version = {server.versions[name]: expected[name] for name in VERSIONS}
    for answers in seen:
        versions = [v for v, _ in answers]
        switch = versions.index(new)
        assert switch > 0 and set(versions[:switch]) == {old} and set(versions[switch:]) == {new}
        for version, forecast in answers:
            np.testing.assert_allclose(forecast, by_version[version], rtol=1e-5, atol=1e-5)
    calls, windows = (b - a for a, b in zip(batches_before, batch_stats(server.url), strict=True))
    assert windows > calls > 0, "concurrent requests were never batched together"


def test_a_model_without_intervals_refuses_levels_naming_llata_calibrate(server: Server) -> None:
    version = _serve(server, "b")  # "b" was saved without conformal scores
    s = server.session()
    body = {"history": GOOD, "levels": [80, 95]}

    r = s.post(f"{server.url}/forecast", json=body)
    series = s.post(f"{server.url}/forecast_series", json={"series_id": "north", "levels": [80]})
    plain = s.post(f"{server.url}/forecast", json={"history": GOOD})
    info = s.get(f"{server.url}/model").json()
    document = s.get(f"{server.url}/docs.json").json()

    assert r.status_code == 422, r.text
    assert f"model {version} has no calibrated prediction intervals" in r.json()["error"]
    assert "llata calibrate" in r.json()["error"]
    assert series.status_code == 422 and "llata calibrate" in series.json()["error"]
    assert plain.status_code == 200 and plain.json()["model_version"] == version
    assert info["model_version"] == version and info["intervals"] is None
    levels = document["components"]["schemas"]["ForecastRequest"]["properties"]["levels"]
    assert f"Model {version} has no calibrated intervals" in levels["description"]


def _wait_current(server: Server) -> str:
    r = server.session().get(f"{server.url}/model")
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


def batch_stats(url: str) -> tuple[float, float]:
    """(model calls, windows) through the batchers of all workers so far."""
    text = requests.get(f"{url}/metrics", timeout=10).text
    return (
        _metric(text, "llata_batch_windows_count"),
        _metric(text, "llata_batch_windows_sum"),
    )


@pytest.mark.parametrize(
    ("damaged", "error"),
    [
        ("model.yaml", "While structuring ModelInfo"),
        ("model.safetensors", "does not match its checksum"),
    ],
)
def test_half_written_version_is_refused_then_served_once_complete(
    server: Server, damaged: str, error: str
) -> None:
    """Production points at a version whose files the server reads half-written (a store
    synced from elsewhere, a copy still running): every worker refuses it and keeps serving
    the old version, then serves the new one a few polls after the file is whole, not after
    a back-off of minutes."""
    serving = _wait_current(server)
    tag = server.registry.register(server.artifacts["a"], metadata={"eval_split_hash": "s"})
    stored = server.registry.get(tag).path / damaged
    whole = stored.read_bytes()
    stored.chmod(0o644)
    # model.yaml cut after a line (it still parses, and lacks fields), the weights mid-file.
    cut = (
        whole.rindex(b"\n", 0, len(whole) // 2) + 1 if damaged == "model.yaml" else len(whole) // 2
    )
    stored.write_bytes(whole[:cut])
    # The registry refuses a damaged version, so point the alias at it directly (atomically,
    # like the registry does), as a store synced before its files would.
    aliases = json.loads(server.registry.aliases_path.read_text())
    aliases.update(production=tag, previous=f"llata-forecaster:{serving}")
    aliases["revision"] += 1
    tmp = server.registry.aliases_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(aliases))
    os.replace(tmp, server.registry.aliases_path)
    s = server.session()

    def refused() -> float:
        metrics = s.get(f"{server.url}/metrics").text
        return _metric(metrics, "llata_model_swaps_total", outcome="refused")

    before = refused()
    deadline = time.monotonic() + 30
    while refused() < before + WORKERS and time.monotonic() < deadline:
        time.sleep(0.1)
    r = s.post(f"{server.url}/forecast", json={"history": _history().tolist()})
    log = server.log.read_text()

    assert refused() >= before + WORKERS, server.log_tail()  # every worker refused it
    assert r.status_code == 200 and r.json()["model_version"] == serving
    assert s.get(f"{server.url}/readyz").status_code == 200
    assert f"refused production version {tag}" in log and error in log

    stored.write_bytes(whole)  # the write completes
    _wait_serving(server, tag.split(":", 1)[1])
    r = s.post(f"{server.url}/forecast", json={"history": _history().tolist()})
    assert r.status_code == 200 and r.json()["model_version"] == tag.split(":", 1)[1]


def test_server_binds_loopback_only_by_default(server: Server) -> None:
    """The fixture starts `bentoml serve` without --host: the listening socket must be
    127.0.0.1, not 0.0.0.0 (read from the kernel's socket table)."""
    port = int(server.url.rsplit(":", 1)[1])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.rpartition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    listening.append(address)
    assert listening == ["0100007F"], listening  # 127.0.0.1, little-endian hex


def test_a_combination_is_served_exactly_like_its_forecaster(server: Server) -> None:
    """A combination artifact promoted through the registry: /forecast, /forecast_series,
    /forecast_batch and GET /model answer as `Forecaster.load(...)` does."""
    version = _serve(server, "combo")
    try:
        fc = Forecaster.load(server.artifacts["combo"])
        s = server.session()
        history = _history(50, seed=4)
        r = s.post(f"{server.url}/forecast", json={"history": history.tolist(), "levels": [80]})
        assert r.status_code == 200, r.text
        body = r.json()
        expected = fc.predict(history, levels=(80,))
        assert body["model_version"] == version
        np.testing.assert_allclose(body["forecast"], expected.point, rtol=1e-5, atol=1e-5)
        lower, upper = _bounds(body)[80.0]
        np.testing.assert_allclose(lower, expected.lower[80], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(upper, expected.upper[80], rtol=1e-5, atol=1e-5)
        # The weighted mean of its members, each reading its own last rows.
        a, dlinear = (Forecaster.load(fc.path / "members" / n) for n in ("a", "dlinear"))
        mean = COMBINATION_WEIGHT * a.predict(history) + (1 - COMBINATION_WEIGHT) * dlinear.predict(
            history
        )
        np.testing.assert_allclose(body["forecast"], mean, rtol=1e-5, atol=1e-5)

        short = s.post(f"{server.url}/forecast", json={"history": history[-32:].tolist()})
        assert short.status_code == 422 and "at least 40" in short.json()["error"]

        rows = server.frame[server.frame["series_id"] == "north"]
        window = rows[list(CHANNELS)].to_numpy()[-COMBINATION_LOOKBACK:]
        r = s.post(f"{server.url}/forecast_series", json={"series_id": "north"})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["forecast"], fc.predict(window), rtol=1e-5, atol=1e-5)

        windows = np.stack([history, history[::-1]])
        r = s.post(
            f"{server.url}/forecast_batch",
            json={"windows": [{"history": w.tolist()} for w in windows]},
        )
        assert r.status_code == 200, r.text
        got = np.array([f["forecast"] for f in r.json()["forecasts"]])
        np.testing.assert_allclose(got, fc.predict_batch(windows), rtol=1e-5, atol=1e-5)

        info = s.get(f"{server.url}/model").json()
        assert info["kind"] == "combination" and info["input_size"] == COMBINATION_LOOKBACK
        assert info["members"] == [  # the test servers run LLATA_PRECISION=fp32
            {
                "name": "a",
                "kind": "llata",
                "backbone": "tiny-gpt2",
                "n_layers": 2,
                "input_size": INPUT_SIZE,
                "weight": 0.6,
                "precision": "fp32",
            },
            {
                "name": "dlinear",
                "kind": "dlinear",
                "backbone": None,
                "n_layers": None,
                "input_size": 40,
                "weight": 0.4,
                "precision": "fp32",
            },
        ]
        assert info["precision"] == "fp32"
        assert info["backbone"] is None and info["n_layers"] is None  # each member's is above
    finally:
        _serve(server, "a")
