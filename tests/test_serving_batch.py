"""`POST /forecast_batch` against a real `bentoml serve` process on 127.0.0.1.

One server (two workers, a bearer token, the tiny calibrated version "a" promoted, at most
MAX_WINDOWS windows a request), started as tests/test_service_contract.py starts its own.
Each window of a batch must be answered exactly as `/forecast` answers it alone, by one model
version for the whole request, also while a promotion swaps the model under load. Its
contract (the document, every status, schemathesis) is tested with the other endpoints' in
tests/test_service_contract.py.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from llata_core.forecaster import Forecaster
from serving.registry import Registry
from tests.test_service_contract import Running, start_server
from tests.test_serving import (
    BAD_BODIES,
    CHANNELS,
    GOOD,
    HORIZON,
    INPUT_SIZE,
    MAX_WINDOWS,
    TOKEN,
    _history,
    _stamps,
    batch_stats,
    wait_serving,
)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("batch")
    yield from start_server(root, token=TOKEN, feature_repo=False, workers=2)


def _windows(n: int = MAX_WINDOWS, seed: int = 20) -> list[np.ndarray]:
    """n different windows, some longer than INPUT_SIZE (only their last rows count)."""
    return [_history(INPUT_SIZE + 5 * (i % 3), seed=seed + i) for i in range(n)]


def _post(running: Running, path: str, body: dict[str, Any]) -> requests.Response:
    return running.session().post(f"{running.url}{path}", json=body, timeout=60)


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "asked", [{}, {"horizon": 20}, {"horizon": 5, "levels": [95, 80]}], ids=str
)
def test_each_window_is_answered_as_forecast_answers_it_alone(
    running: Running, asked: dict[str, Any]
) -> None:
    windows = _windows()
    stamps = _stamps(len(windows[1]))  # one window with timestamps: only it gets them back
    items: list[dict[str, Any]] = [{"history": w.tolist()} for w in windows]
    items[1]["timestamps"] = stamps
    before = batch_stats(running.url)

    r = _post(running, "/forecast_batch", {"windows": items, **asked})
    calls, through = (b - a for a, b in zip(before, batch_stats(running.url), strict=True))
    alone = [_post(running, "/forecast", {**item, **asked}).json() for item in items]

    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["forecasts", "model_version"]
    assert body["model_version"] == running.version
    assert len(body["forecasts"]) == len(windows)
    fc = Forecaster.load(running.artifact)
    levels = tuple(asked.get("levels", ()))
    for window, answer, single in zip(windows, body["forecasts"], alone, strict=True):
        # The same fields in the same order as /forecast's answer, less the version.
        assert list(answer) == [k for k in single if k != "model_version"]
        assert answer["channels"] == list(CHANNELS)
        assert answer["horizon"] == asked.get("horizon", HORIZON)
        # Alike to float32 rounding: a model call on 4 windows and one on 1 may round the last
        # bit differently (measured 2e-6 on values near 1 after a 20-step roll-out).
        np.testing.assert_allclose(answer["forecast"], single["forecast"], rtol=1e-5, atol=1e-5)
        expected = fc.predict(window, horizon=answer["horizon"], levels=levels or None)
        point = expected.point if levels else expected
        np.testing.assert_allclose(answer["forecast"], point, rtol=1e-5, atol=1e-5)
        if levels:
            assert [i["level"] for i in answer["intervals"]] == list(levels)  # as asked
            pairs = zip(answer["intervals"], single["intervals"], strict=True)
            for interval, its_alone in pairs:
                for side in ("lower", "upper"):
                    got, bound = interval[side], getattr(expected, side)[interval["level"]]
                    np.testing.assert_allclose(got, its_alone[side], rtol=1e-5, atol=1e-5)
                    np.testing.assert_allclose(got, bound, rtol=1e-5, atol=1e-5)
    assert body["forecasts"][1]["timestamps"] == alone[1]["timestamps"]
    assert all("timestamps" not in body["forecasts"][i] for i in (0, 2, 3))
    # The windows of one request went through the model together, not one call each.
    assert through == len(windows) and 1 <= calls < len(windows), (calls, through)


# --------------------------------------------------------------------------- refusals


def test_more_windows_than_the_limit_are_refused_naming_it(running: Running) -> None:
    items = [{"history": w.tolist()} for w in _windows(MAX_WINDOWS + 1)]

    r = _post(running, "/forecast_batch", {"windows": items})

    assert r.status_code == 400, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["windows"] and f"at most {MAX_WINDOWS} items" in detail["msg"]


def test_an_empty_batch_is_refused(running: Running) -> None:
    r = _post(running, "/forecast_batch", {"windows": []})

    assert r.status_code == 400, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["windows"] and "at least 1 item" in detail["msg"]


# Each window /forecast refuses with a 422 (the model cannot take it), here at windows[2].
WINDOW_REFUSALS = sorted(case for case, (_, status, _) in BAD_BODIES.items() if status == 422)


@pytest.mark.parametrize("case", WINDOW_REFUSALS)
def test_a_window_the_model_cannot_take_is_a_422_naming_its_index(
    running: Running, case: str
) -> None:
    bad, _, fragment = BAD_BODIES[case]

    r = _post(running, "/forecast_batch", {"windows": [{"history": GOOD}] * 2 + [bad]})

    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error.startswith("windows[2]: ") and fragment in error, error


def test_a_window_breaking_the_schema_is_a_400_locating_it(running: Running) -> None:
    ragged = [*GOOD[:-1], [1.0, 2.0]]

    r = _post(running, "/forecast_batch", {"windows": [{"history": GOOD}, {"history": ragged}]})

    assert r.status_code == 400, r.text
    (detail,) = r.json()["detail"]
    assert detail["loc"] == ["windows", 1, "history"] and "ragged" in detail["msg"]


def test_levels_the_calibration_cannot_answer_refuse_the_request(running: Running) -> None:
    body = {"windows": [{"history": GOOD}] * 2, "horizon": HORIZON + 1, "levels": [80]}

    r = _post(running, "/forecast_batch", body)

    assert r.status_code == 422, r.text
    assert f"calibrated for {HORIZON} steps" in r.json()["error"]


# --------------------------------------------------------------------------- hot swap


def test_one_version_answers_each_request_across_a_hot_swap(running: Running) -> None:
    """Threads send batches while version "b" is promoted: every answer comes from the one
    version it names, for all of its windows (they differ, so a mix would show)."""
    windows = _windows(seed=40)
    items = [{"history": w.tolist()} for w in windows]
    root = running.artifact.parent.parent  # start_server's root
    artifacts = {"a": running.artifact, "b": running.artifact.with_name("b")}
    expected = {
        name: [Forecaster.load(path).predict(w) for w in windows]
        for name, path in artifacts.items()
    }
    stop = threading.Event()
    answers: list[dict[str, Any]] = []
    failures: list[str] = []

    def hammer() -> None:
        s = running.session()
        while not stop.is_set():
            r = s.post(f"{running.url}/forecast_batch", json={"windows": items}, timeout=60)
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text}")
            else:
                answers.append(r.json())

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tempfile, "tempdir", str(root))  # BentoML stages models there
            registry = Registry(bentoml_home=root / "bentoml")
            tag = registry.register(artifacts["b"], metadata={"eval_split_hash": "s"})
            registry.promote(tag, score=None, margin=0.0, force=True)
        new = tag.split(":", 1)[1]
        wait_serving(running.url, new, running.workers)
        deadline = time.monotonic() + 60
        while sum(a["model_version"] == new for a in answers) < 8:
            assert time.monotonic() < deadline and not failures, failures[:3]
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)

    assert not failures, failures[:3]
    names = {running.version: "a", new: "b"}
    assert {a["model_version"] for a in answers} == set(names)
    for answer in answers:
        name = names[answer["model_version"]]
        for got, want in zip(answer["forecasts"], expected[name], strict=True):
            np.testing.assert_allclose(got["forecast"], want, rtol=1e-5, atol=1e-5)
    assert not any(np.allclose(expected["a"][i], expected["b"][i]) for i in range(len(windows)))
