"""`POST /forecast_batch` against a real `bentoml serve` process on 127.0.0.1.

One server (two workers, a bearer token, the tiny calibrated version "a" promoted, at most
MAX_WINDOWS windows a request), started as tests/test_service_contract.py starts its own.
Each window of a batch must be answered exactly as `/forecast` answers it alone, by one model
version for the whole request, also while a promotion swaps the model under load. The same
windows sent as one `.npy` array to `/forecast_batch.npy` must be answered exactly as the
JSON body is, and every malformed array refused naming its problem. Its contract (the
document, every status, schemathesis) is tested with the other endpoints' in
tests/test_service_contract.py. The hot swap runs last: it leaves version "b", which has no
intervals, in production.
"""

from __future__ import annotations

import io
import pickle
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests

from llata_core.forecaster import Forecaster
from serving.npy import NPY_MEDIA_TYPE as NPY
from serving.registry import Registry
from tests.test_service_contract import Running, start_server
from tests.test_serving import (
    BAD_BODIES,
    CHANNELS,
    GOOD,
    HORIZON,
    INPUT_SIZE,
    MAX_BYTES,
    MAX_STEPS,
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


# --------------------------------------------------------------------------- .npy bodies


def _npy(array: np.ndarray, **save: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **save)
    return buffer.getvalue()


def _post_npy(
    running: Running, body: bytes, query: str = "", *, media: str = NPY, token: bool = True
) -> requests.Response:
    session = running.session() if token else requests.Session()
    return session.post(
        f"{running.url}/forecast_batch.npy{query}",
        data=body,
        headers={"Content-Type": media},
        timeout=60,
    )


def _array(n: int = MAX_WINDOWS, steps: int = INPUT_SIZE + 3, seed: int = 60) -> np.ndarray:
    """n different windows of one length (an array is rectangular), longer than INPUT_SIZE."""
    return np.stack([_history(steps, seed=seed + i) for i in range(n)])  # [n, steps, M]


@pytest.mark.parametrize("dtype", ["float32", "float64", ">f8"])
@pytest.mark.parametrize(
    ("asked", "query"),
    [
        ({}, ""),
        ({"horizon": 20}, "?horizon=20"),
        ({"horizon": 5, "levels": [95, 80]}, "?horizon=5&levels=95&levels=80"),
    ],
    ids=["defaults", "horizon", "levels"],
)
def test_an_npy_body_is_answered_as_the_json_body(
    running: Running, dtype: str, asked: dict[str, Any], query: str
) -> None:
    windows = _array().astype(dtype)
    # The same values as JSON numbers: a float32 value is written as the float64 it equals.
    as_json = {"windows": [{"history": w.astype(np.float64).tolist()} for w in windows], **asked}

    binary = _post_npy(running, _npy(windows), query)
    text = _post(running, "/forecast_batch", as_json)

    assert binary.status_code == 200, binary.text
    assert text.status_code == 200, text.text
    assert binary.headers["Content-Type"] == "application/json"
    assert binary.json() == text.json()


def _npz(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, windows=array)
    return buffer.getvalue()


def _bad_query(query: str, status: int, fragment: str) -> tuple[bytes, str, int, str]:
    return _npy(_array()), query, status, fragment


NAN_AT = _array()
NAN_AT[1, 3, 2] = np.nan
INF_AT = _array()
INF_AT[0, 0, 1] = -np.inf
NPY_REFUSALS: dict[str, tuple[bytes, str, int, str]] = {
    # name: (body, query, status, fragment of the error or of a detail message)
    "object dtype": (
        _npy(np.array([[[1.0, "x", None]]], dtype=object), allow_pickle=True),
        "",
        400,
        "objects (a pickle, never loaded)",
    ),
    "a pickle": (pickle.dumps(_array()), "", 400, "not a .npy array"),
    "an npz archive": (_npz(_array()), "", 400, "a .npz archive"),
    "truncated": (_npy(_array())[:-10], "", 400, "truncated"),
    "trailing bytes": (_npy(_array()) + b"\0" * 8, "", 400, "trailing bytes"),
    "a broken header": (
        np.lib.format.MAGIC_PREFIX + b"\x01\x00\x10\x00{'descr': <f8",
        "",
        400,
        "header does not parse",
    ),
    "integers": (_npy(_array().astype(np.int64)), "", 400, "send float32 or float64"),
    "float16": (_npy(_array().astype(np.float16)), "", 400, "<f2"),
    "one window, 2-d": (_npy(_array()[0]), "", 400, f"shape [{INPUT_SIZE + 3}, 3]"),
    "no windows": (_npy(np.zeros((0, INPUT_SIZE, 3))), "", 400, "0 windows"),
    "too many windows": (
        _npy(_array(MAX_WINDOWS + 1)),
        "",
        400,
        f"{MAX_WINDOWS + 1} windows (shape [{MAX_WINDOWS + 1}, {INPUT_SIZE + 3}, 3]); send 1 "
        f"to {MAX_WINDOWS} (LLATA_MAX_WINDOWS)",
    ),
    "too many steps": (_npy(np.ones((1, MAX_STEPS + 1, 3))), "", 400, "LLATA_MAX_STEPS"),
    "nan": (_npy(NAN_AT), "", 400, "windows[1] holds nan at step 3, channel 2"),
    "infinity": (_npy(INF_AT), "", 400, "windows[0] holds -inf at step 0, channel 1"),
    "an empty body": (b"", "", 400, "not a .npy array"),
    "horizon zero": _bad_query("?horizon=0", 400, "greater than or equal to 1"),
    "horizon not an integer": _bad_query("?horizon=2.5", 400, "valid integer"),
    "horizon repeated": _bad_query("?horizon=2&horizon=3", 400, "valid integer"),
    "a fraction level": _bad_query("?levels=0.8", 400, "looks like a fraction"),
    "a level repeated": _bad_query("?levels=80&levels=80.0", 400, "given twice"),
    "an unknown parameter": _bad_query("?horizn=3", 400, "Extra inputs are not permitted"),
    "wrong channel count": (
        _npy(np.ones((2, INPUT_SIZE, 4))),
        "",
        422,
        "windows[0]: history has 4 channels, the model expects 3 (a, b, c)",
    ),
    "too short": (
        _npy(np.ones((2, 10, 3))),
        "",
        422,
        f"windows[0]: history has 10 steps, the model needs at least {INPUT_SIZE}",
    ),
    "levels beyond the calibration": _bad_query(
        f"?horizon={HORIZON + 1}&levels=80", 422, f"calibrated for {HORIZON} steps"
    ),
}


@pytest.mark.parametrize("case", sorted(NPY_REFUSALS))
def test_a_bad_npy_request_is_a_4xx_naming_the_problem(running: Running, case: str) -> None:
    body, query, status, fragment = NPY_REFUSALS[case]

    r = _post_npy(running, body, query)

    assert r.status_code == status, r.text
    answer = r.json()
    messages = [answer["error"], *(d["msg"] for d in answer.get("detail", []))]
    assert any(fragment in m for m in messages), answer


def test_each_path_takes_its_own_media_type_and_the_guard_holds(running: Running) -> None:
    body = _npy(_array())

    json_to_npy = _post_npy(running, b'{"windows": []}', media="application/json")
    npy_to_json = running.session().post(
        f"{running.url}/forecast_batch", data=body, headers={"Content-Type": NPY}, timeout=60
    )
    octets = _post_npy(running, body, media="application/octet-stream")
    anonymous = _post_npy(running, body, token=False)
    oversized = _post_npy(running, body + b"\0" * MAX_BYTES)
    # Without a Content-Type a body is taken for the path's media type (JSON elsewhere).
    bare = running.session().post(f"{running.url}/forecast_batch.npy", data=body, timeout=60)
    nothing = running.session().post(f"{running.url}/forecast_batch.npy", timeout=60)

    assert json_to_npy.status_code == 415, json_to_npy.text
    assert "Content-Type: application/x-npy" in json_to_npy.json()["error"]
    assert npy_to_json.status_code == 415, npy_to_json.text
    assert "goes to POST /forecast_batch.npy" in npy_to_json.json()["error"]
    assert octets.status_code == 415 and "not application/octet-stream" in octets.json()["error"]
    assert anonymous.status_code == 401 and "missing bearer token" in anonymous.json()["error"]
    assert oversized.status_code == 413, oversized.text
    assert f"limit of {MAX_BYTES} bytes" in oversized.json()["error"]
    assert bare.status_code == 200, bare.text
    assert nothing.status_code == 400 and "not a .npy array" in nothing.json()["error"]


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
