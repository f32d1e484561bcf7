"""The service's HTTP contract against real `bentoml serve` processes on 127.0.0.1.

Two servers, each started with a production version already promoted:

* "deployed": a bearer token, a Feast repo for /forecast_series, two workers;
* "bare": no token and no feature repo (so /forecast_series answers 501), one worker.

For each, schemathesis runs every check it has (status codes, bodies and headers against the
published /docs.json, schema-valid data accepted, schema-invalid data refused with 400/422,
authentication enforced, unlisted methods answered 405 with Allow) with a fixed number of
derandomised examples, and BentoML's own Python client calls the deployed one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from llata_core.forecaster import Forecaster
from llata_core.intervals import MAX_LEVELS
from serving.registry import Registry
from tests.test_serving import (
    CHANNELS,
    INPUT_SIZE,
    MAX_HORIZON,
    MAX_STEPS,
    MAX_WINDOWS,
    TOKEN,
    _history,
    build_artifacts,
    concurrently,
    prepare_series_repo,
    serve,
    server_env,
    wait_serving,
)

# Examples per operation and phase; every run draws the same ones (derandomised).
MAX_EXAMPLES = 60
# 400: the body breaks the schema; 422: it keeps the schema but not what the model needs
# or what a schema cannot state (timestamps one per row, evenly spaced; finite forecasts).
REFUSALS = ["400", "422"]


@dataclass
class Running:
    url: str
    version: str
    artifact: Path
    token: str | None
    workers: int
    first_answers: list[requests.Response]

    def session(self) -> requests.Session:
        s = requests.Session()
        if self.token is not None:
            s.headers["Authorization"] = f"Bearer {self.token}"
        return s

    def document(self) -> dict[str, Any]:
        r = self.session().get(f"{self.url}/docs.json", timeout=30)
        assert r.status_code == 200, r.text
        return dict(r.json())


def start_server(
    root: Path, *, token: str | None, feature_repo: bool, workers: int
) -> Iterator[Running]:
    """Registers and promotes version "a", then starts a server on it."""
    home = root / "bentoml"
    artifact = build_artifacts(root / "artifacts")["a"]
    settings = {"LLATA_WORKERS": str(workers)}
    if token is not None:
        settings["LLATA_API_TOKEN"] = token
    if feature_repo:
        prepare_series_repo(root / "feature_repo")
        settings["LLATA_FEATURE_REPO"] = str(root / "feature_repo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENTOML_DO_NOT_TRACK", "True")
        patch.setattr(tempfile, "tempdir", str(root))  # BentoML stages models there
        registry = Registry(bentoml_home=home)
        tag = registry.register(artifact, metadata={"eval_split_hash": "s"})
        registry.promote(tag, score=None, margin=0.0, force=True)
    version = tag.split(":", 1)[1]
    with serve(server_env(home, **settings), root / "server.log") as (url, _):
        # The first requests, sent as soon as a worker accepts: each worker loads the
        # production model while it starts, before it accepts a connection.
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = {"history": _history(40).tolist()}
        first = concurrently(
            [lambda: requests.post(f"{url}/forecast", json=body, headers=headers, timeout=120)]
            * (4 * workers)
        )
        wait_serving(url, version, workers)
        yield Running(url, version, artifact, token, workers, first)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("deployed")
    yield from start_server(root, token=TOKEN, feature_repo=True, workers=2)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("bare")
    yield from start_server(root, token=None, feature_repo=False, workers=1)


def _statuses(document: dict[str, Any], path: str, method: str) -> set[int]:
    return {int(code) for code in document["paths"][path][method]["responses"]}


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("which", ["deployed", "bare"])
def test_a_started_server_answers_its_first_requests(
    request: pytest.FixtureRequest, which: str
) -> None:
    running: Running = request.getfixturevalue(which)

    answers = running.first_answers

    assert [r.status_code for r in answers] == [200] * len(answers), [r.text for r in answers]
    assert {r.json()["model_version"] for r in answers} == {running.version}


def test_document_states_every_enforced_limit(deployed: Running) -> None:
    schemas = deployed.document()["components"]["schemas"]
    request = schemas["ForecastRequest"]
    history = request["properties"]["history"]
    horizon = request["properties"]["horizon"]["anyOf"][0]
    stamps = request["properties"]["timestamps"]["anyOf"][0]
    levels = request["properties"]["levels"]["anyOf"][0]
    series = schemas["SeriesRequest"]["properties"]

    # The served model needs INPUT_SIZE rows of len(CHANNELS) values; the server takes at
    # most MAX_STEPS rows.
    assert (history["minItems"], history["maxItems"]) == (INPUT_SIZE, MAX_STEPS)
    assert history["items"]["minItems"] == history["items"]["maxItems"] == len(CHANNELS)
    assert history["items"]["items"] == {"type": "number"}
    assert (horizon["type"], horizon["minimum"], horizon["maximum"]) == ("integer", 1, MAX_HORIZON)
    assert stamps["maxItems"] == MAX_STEPS and stamps["items"]["maxLength"] == 64
    assert request["additionalProperties"] is False and request["required"] == ["history"]
    assert (series["series_id"]["minLength"], series["series_id"]["maxLength"]) == (1, 256)
    # Levels are percent: distinct, at most MAX_LEVELS, from 1 (0.8 is a fraction) to under 100.
    assert (levels["minItems"], levels["maxItems"], levels["uniqueItems"]) == (1, MAX_LEVELS, True)
    assert levels["items"] == {"type": "number", "minimum": 1, "exclusiveMaximum": 100}
    assert series["levels"]["anyOf"][0] == levels
    assert "calibrated for 8 steps" in request["properties"]["levels"]["description"]
    interval = schemas["PredictionInterval"]
    assert interval["required"] == ["level", "lower", "upper"]
    answer = schemas["ForecastResponse"]["properties"]["intervals"]["anyOf"][0]
    assert answer["items"] == {"$ref": "#/components/schemas/PredictionInterval"}
    assert schemas["ModelInfo"]["properties"]["intervals"]["anyOf"][0] == {
        "$ref": "#/components/schemas/IntervalCalibration"
    }
    assert schemas["ErrorBody"]["properties"]["detail"]["type"] == "array"
    assert schemas["ErrorBody"]["required"] == ["error"]
    # /forecast_batch: 1 to MAX_WINDOWS windows, each held to /forecast's rules for a window.
    batch = schemas["BatchRequest"]["properties"]
    assert (batch["windows"]["minItems"], batch["windows"]["maxItems"]) == (1, MAX_WINDOWS)
    assert batch["windows"]["items"] == {"$ref": "#/components/schemas/HistoryWindow"}
    window = schemas["HistoryWindow"]["properties"]
    assert window["history"] == history
    assert window["timestamps"] == request["properties"]["timestamps"]
    assert batch["horizon"]["anyOf"][0] == horizon and batch["levels"]["anyOf"][0] == levels
    assert schemas["BatchForecastResponse"]["required"] == ["forecasts", "model_version"]
    forecasts = schemas["BatchForecastResponse"]["properties"]["forecasts"]
    assert forecasts["items"] == {"$ref": "#/components/schemas/WindowForecast"}


def test_without_a_model_the_document_states_the_server_limits_only() -> None:
    from serving.bodies import LIMITS
    from serving.contract import openapi_document

    document = openapi_document(shape=None, auth=False, feature_store=True)
    history = document["components"]["schemas"]["ForecastRequest"]["properties"]["history"]

    assert (history["minItems"], history["maxItems"]) == (1, LIMITS.max_steps)
    assert (history["items"]["minItems"], history["items"]["maxItems"]) == (1, LIMITS.max_channels)
    assert "securitySchemes" not in document["components"]


def test_document_lists_every_status_each_endpoint_answers(
    deployed: Running, bare: Running
) -> None:
    full, lean = deployed.document(), bare.document()
    refused = {400, 413, 415, 500, 503}

    assert _statuses(full, "/forecast", "post") == {200, 401, 422} | refused
    assert _statuses(full, "/forecast_batch", "post") == {200, 401, 422} | refused
    assert _statuses(lean, "/forecast_batch", "post") == {200, 422} | refused
    assert _statuses(full, "/forecast_batch.npy", "post") == {200, 401, 422} | refused
    assert _statuses(lean, "/forecast_batch.npy", "post") == {200, 422} | refused
    assert _statuses(full, "/forecast_series", "post") == {200, 401, 404, 409, 422} | refused
    assert _statuses(full, "/model", "get") == {200, 401, 500, 503}
    assert _statuses(full, "/readyz", "get") == {200, 503}
    assert _statuses(lean, "/forecast", "post") == {200, 422} | refused
    assert _statuses(lean, "/forecast_series", "post") == {501} | refused
    assert full["paths"]["/forecast"]["post"]["security"] == [{"bearer": []}]
    assert full["paths"]["/livez"]["get"]["security"] == []
    assert "securitySchemes" not in lean["components"]


def test_document_describes_the_npy_body_its_query_and_its_answer(deployed: Running) -> None:
    document = deployed.document()
    operation = document["paths"]["/forecast_batch.npy"]["post"]
    batch = document["paths"]["/forecast_batch"]["post"]
    options = document["components"]["schemas"]["BatchRequest"]["properties"]

    body = operation["requestBody"]["content"]
    parameters = {p["name"]: p for p in operation["parameters"]}

    assert list(body) == ["application/x-npy"] and operation["requestBody"]["required"]
    schema = body["application/x-npy"]["schema"]
    assert (schema["type"], schema["format"]) == ("string", "binary")
    assert "[windows, steps, channels], float32 or float64" in schema["description"]
    assert f"at least {INPUT_SIZE} steps of {len(CHANNELS)} channels" in schema["description"]
    assert list(parameters) == ["horizon", "levels"]
    assert all(p["in"] == "query" and not p["required"] for p in parameters.values())
    # The same rules as the JSON body's fields, less their null (an absent parameter).
    assert parameters["horizon"]["schema"] == options["horizon"]["anyOf"][0]
    assert parameters["levels"]["schema"] == options["levels"]["anyOf"][0]
    assert (parameters["levels"]["style"], parameters["levels"]["explode"]) == ("form", True)
    assert "calibrated for 8 steps" in parameters["levels"]["description"]
    assert operation["responses"]["200"] == batch["responses"]["200"]
    assert "application/x-npy" in operation["responses"]["415"]["description"]
    assert list(batch["requestBody"]["content"]) == ["application/json"]


def test_forecast_series_without_a_feature_repo_answers_the_documented_501(bare: Running) -> None:
    r = bare.session().post(f"{bare.url}/forecast_series", json={"series_id": "north"})

    assert r.status_code == 501, r.text
    assert r.json() == {
        "error": "no feature store configured: start the server with LLATA_FEATURE_REPO set"
    }


def test_schema_errors_carry_a_detail_list(deployed: Running) -> None:
    r = deployed.session().post(
        f"{deployed.url}/forecast", json={"history": [[1.0, "x", 3.0]], "horizon": 0}
    )

    assert r.status_code == 400, r.text
    body = r.json()
    assert isinstance(body["error"], str)
    assert {tuple(d["loc"]) for d in body["detail"]} == {("history", 0, 1), ("horizon",)}


def _schemathesis(running: Running, tmp_path: Path, *, also_expected: list[str]) -> str:
    """Runs `schemathesis run` with every check against the server; returns its report."""
    config = tmp_path / "schemathesis.toml"
    positive = ["2xx", "404", "409", "422", *also_expected]
    config.write_text(
        "workers = 1\n"
        "[cache]\nenabled = false\n"
        f"[generation]\nmax-examples = {MAX_EXAMPLES}\ndeterministic = true\n"
        'database = "none"\n'
        f"[checks.not_a_server_error]\nexpected-statuses = {['2xx', '4xx', *also_expected]}\n"
        f"[checks.positive_data_acceptance]\nexpected-statuses = {positive}\n"
        f"[checks.negative_data_rejection]\nexpected-statuses = {REFUSALS}\n"
    )
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        f"{running.url}/docs.json",
        "--checks",
        "all",
        "--no-color",
    ]
    if running.token is not None:
        command += ["--header", f"Authorization: Bearer {running.token}"]
    root = str(Path(__file__).resolve().parents[1])
    env = {
        **os.environ,
        # tests/schemathesis_npy.py writes the .npy bodies of /forecast_batch.npy.
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_npy",
        "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "LLATA_NPY_BODIES": f"{MAX_WINDOWS},{INPUT_SIZE},{MAX_STEPS},{len(CHANNELS)}",
    }
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    return report


def test_schemathesis_finds_no_contract_violation_on_the_deployed_server(
    deployed: Running, tmp_path: Path
) -> None:
    report = _schemathesis(deployed, tmp_path, also_expected=[])

    assert "9 selected / 9 total" in report and "Fuzzing" in report and "Coverage" in report


def test_schemathesis_finds_no_contract_violation_on_the_bare_server(
    bare: Running, tmp_path: Path
) -> None:
    # 501 is this server's documented, lasting answer to every /forecast_series call.
    report = _schemathesis(bare, tmp_path, also_expected=["501"])

    assert "9 selected / 9 total" in report


# BentoML 1.4.40's client builds its models through a pydantic hook deprecated in 2.11.
@pytest.mark.filterwarnings("ignore:The `__get_pydantic_core_schema__` method:DeprecationWarning")
def test_bentoml_python_client(deployed: Running) -> None:
    import bentoml
    from bentoml.exceptions import BentoMLException

    history = _history(40, seed=5)
    with bentoml.SyncHTTPClient(deployed.url, token=deployed.token) as client:
        answer = client.forecast(history=history.tolist(), horizon=3)
        dated = client.forecast(
            history=history.tolist(),
            timestamps=[f"2024-01-{1 + i // 24:02d}T{i % 24:02d}:00:00" for i in range(40)],
        )
        stored = client.forecast_series(series_id="north", horizon=2)
        bands = client.forecast(history=history.tolist(), horizon=3, levels=[80, 95])
        stored_bands = client.forecast_series(series_id="north", levels=[50])
        with pytest.raises(BentoMLException) as too_short:
            client.forecast(history=history[:5].tolist())
        with pytest.raises(BentoMLException) as unknown:
            client.forecast_series(series_id="atlantis")
        with pytest.raises(BentoMLException) as beyond:
            client.forecast(history=history.tolist(), horizon=9, levels=[80])
        batch = client.forecast_batch(
            windows=[{"history": history.tolist()}, {"history": history[:-2].tolist()}],
            horizon=3,
        )

    expected = Forecaster.load(deployed.artifact).predict(history, horizon=3)
    np.testing.assert_allclose(answer["forecast"], expected, rtol=1e-5, atol=1e-5)
    assert answer["model_version"] == deployed.version and "timestamps" not in answer
    assert batch["model_version"] == deployed.version and len(batch["forecasts"]) == 2
    np.testing.assert_allclose(batch["forecasts"][0]["forecast"], expected, rtol=1e-5, atol=1e-5)
    assert dated["timestamps"][0] == "2024-01-02T16:00:00"
    assert stored["series_id"] == "north" and np.array(stored["forecast"]).shape == (2, 3)
    assert too_short.value.error_code == 422 and "needs at least 32" in str(too_short.value)
    assert unknown.value.error_code == 404 and "atlantis" in str(unknown.value)
    intervals = Forecaster.load(deployed.artifact).predict(history, horizon=3, levels=(80, 95))
    assert [i["level"] for i in bands["intervals"]] == [80, 95]
    for interval in bands["intervals"]:
        np.testing.assert_allclose(interval["lower"], intervals.lower[interval["level"]], atol=1e-5)
        np.testing.assert_allclose(interval["upper"], intervals.upper[interval["level"]], atol=1e-5)
    assert np.array(stored_bands["intervals"][0]["upper"]).shape == (8, 3)
    assert beyond.value.error_code == 422 and "calibrated for 8 steps" in str(beyond.value)
