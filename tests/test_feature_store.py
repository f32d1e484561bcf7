"""Feast feature repo: apply, materialize, push, online and point-in-time reads.

One store is applied per module (apply + materialize + push take about a second); each
test reads it, and the only test that writes uses a series of its own. A second store,
whose offline observations hold a second write of two (series, timestamp) pairs, checks
the as-of read's tie rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast import FeatureStore

from features.definitions import build_definitions
from features.store import (
    UnknownSeriesError,
    check_against_point_in_time,
    get_training_frame,
    get_training_frame_asof,
    open_feature_store,
    prepare_feature_repo,
    push_context_window,
    read_context_window,
)
from features.validation import FrameSpec

INPUT_SIZE = 8
ROWS = 30
START = pd.Timestamp("2024-03-01 00:00")
SERIES = ("north", "south", "east")
SPEC = FrameSpec(min_rows=INPUT_SIZE + 4, series_column="series_id")


def make_frame() -> pd.DataFrame:
    """Hourly rows per series; every value encodes (series, step), so a row fetched from
    the wrong time or series is visible: a = 1000 * series number + step, b = -a."""
    parts = []
    for number, series_id in enumerate(SERIES):
        steps = np.arange(ROWS, dtype=np.float64)
        a = 1000.0 * number + steps
        parts.append(
            pd.DataFrame(
                {
                    "date": pd.date_range(START, periods=ROWS, freq="h"),
                    "series_id": series_id,
                    "a": a,
                    "b": -a,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame) -> Iterator[Path]:
    """An applied, materialized repo, built from an unrelated working directory to show
    that the repo-relative paths in feature_store.yaml do not depend on it."""
    repo_dir = tmp_path_factory.mktemp("feature_repo")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)
        prepare_feature_repo(repo_dir, frame, SPEC, INPUT_SIZE)
        assert list(elsewhere.iterdir()) == []
    yield repo_dir


@pytest.fixture(scope="module")
def store(repo: Path) -> FeatureStore:
    return open_feature_store(repo)


def test_repo_holds_its_own_files(repo: Path) -> None:
    names = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert names == [
        "data/context_window.parquet",
        "data/observations.parquet",
        "data/online_store.db",
        "data/registry.db",
        "feature_store.yaml",
    ]


def test_registry_holds_the_definitions(store: FeatureStore) -> None:
    assert [e.name for e in store.list_entities()] == ["series"]
    assert sorted(v.name for v in store.list_feature_views()) == ["context_window", "observations"]
    assert sorted(s.name for s in store.list_feature_services()) == ["serving", "training"]
    view = store.get_feature_view("context_window")
    assert view.tags["input_size"] == str(INPUT_SIZE)


@pytest.mark.parametrize("series_id", ["north", "south"])
def test_online_window_is_the_last_input_size_rows(
    store: FeatureStore, frame: pd.DataFrame, series_id: str
) -> None:
    rows = frame[frame["series_id"] == series_id]

    window = read_context_window(store, series_id)

    assert window.series_id == series_id
    assert window.channels == ("a", "b")
    assert window.values.dtype == np.float64
    np.testing.assert_array_equal(window.values, rows[["a", "b"]].to_numpy()[-INPUT_SIZE:])
    assert window.window_end == rows["date"].iloc[-1].tz_localize("UTC")


def test_observations_are_materialized_online(store: FeatureStore, frame: pd.DataFrame) -> None:
    online = store.get_online_features(
        features=store.get_feature_service("training"),
        entity_rows=[{"series_id": "south"}],
    ).to_dict()

    last = frame[frame["series_id"] == "south"].iloc[-1]
    assert (online["a"], online["b"]) == ([last["a"]], [last["b"]])


def test_training_frame_is_point_in_time_correct(store: FeatureStore) -> None:
    half_past = pd.Timedelta(minutes=30)
    entity_df = pd.DataFrame(
        {
            "series_id": ["north", "south", "north", "north", "south", "north"],
            "event_timestamp": [
                START + pd.Timedelta(hours=3) + half_past,  # step 4 lies 30 min ahead
                START + pd.Timedelta(hours=5),  # exactly on step 5
                START - pd.Timedelta(hours=1),  # before the first observation
                START + pd.Timedelta(hours=3) + half_past,  # a repeated entity row
                START + pd.Timedelta(hours=ROWS + 5),  # after the last observation
                START + pd.Timedelta(hours=10),
            ],
            "label": np.arange(6),
        },
        index=[10, 11, 12, 13, 14, 15],
    )

    training = get_training_frame(store, entity_df)

    pd.testing.assert_frame_equal(training[list(entity_df.columns)], entity_df)
    expected_a = [3.0, 1005.0, np.nan, 3.0, 1000.0 + ROWS - 1, 10.0]
    np.testing.assert_array_equal(training["a"].to_numpy(), expected_a)
    np.testing.assert_array_equal(training["b"].to_numpy(), -np.asarray(expected_a))


def test_training_never_sees_a_later_value(store: FeatureStore, frame: pd.DataFrame) -> None:
    """Sweep entity times between observations: the value returned is always stamped at
    or before the entity time (step = floor of the hour), never the next one."""
    offsets = pd.to_timedelta(np.arange(0, ROWS * 60, 25), unit="min")
    entity_df = pd.DataFrame({"series_id": "north", "event_timestamp": START + offsets})

    training = get_training_frame(store, entity_df)

    floor_step = (offsets // pd.Timedelta(hours=1)).to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(training["a"].to_numpy(), floor_step)


def test_asof_read_answers_as_the_point_in_time_join(store: FeatureStore) -> None:
    half_past = pd.Timedelta(minutes=30)
    entity_df = pd.DataFrame(
        {
            "series_id": ["south", "north", "north", "east", "north", "south", "north"],
            "event_timestamp": [
                START + pd.Timedelta(hours=7),  # exactly on step 7
                START + pd.Timedelta(hours=5) + half_past,  # step 5 lies 30 min ahead
                START - pd.Timedelta(hours=1),  # before the first observation
                START + pd.Timedelta(hours=ROWS + 5),  # after the last observation
                START + pd.Timedelta(hours=3) + half_past,
                START + pd.Timedelta(hours=2),
                START + pd.Timedelta(hours=3) + half_past,  # a repeated entity row
            ],
            "label": np.arange(7),
        },
        index=[20, 21, 22, 23, 24, 25, 26],
    )
    rows = len(entity_df)

    exact, exact_retrieval = get_training_frame_asof(
        store, entity_df, max_pit_rows=rows, check_rows=3
    )
    asof, asof_retrieval = get_training_frame_asof(
        store, entity_df, max_pit_rows=rows - 1, check_rows=3
    )

    assert (exact_retrieval, asof_retrieval) == ("point_in_time", "offline_asof")
    pd.testing.assert_frame_equal(exact, get_training_frame(store, entity_df))
    pd.testing.assert_frame_equal(asof, exact)
    expected_a = [1007.0, 5.0, np.nan, 2000.0 + ROWS - 1, 3.0, 1002.0, 3.0]
    np.testing.assert_array_equal(asof["a"].to_numpy(), expected_a)
    np.testing.assert_array_equal(asof["b"].to_numpy(), -np.asarray(expected_a))


@pytest.fixture(scope="module")
def rewritten_store(tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame) -> FeatureStore:
    """A store whose offline observations also hold a second write of two pairs: a later
    write of north at step 5 (a = 100.5, first in the file) and an earlier write of south
    at step 7 (a = -1, last in the file). The created timestamp decides, not the order."""
    repo_dir = tmp_path_factory.mktemp("rewritten_repo")
    prepare_feature_repo(repo_dir, frame, SPEC, INPUT_SIZE)
    path = repo_dir / "data" / "observations.parquet"
    observations = pd.read_parquet(path)

    def rewrite(series_id: str, step: int, a: float, age: pd.Timedelta) -> pd.DataFrame:
        at = START.tz_localize("UTC") + pd.Timedelta(hours=step)
        row = observations[
            (observations["series_id"] == series_id) & (observations["event_timestamp"] == at)
        ].copy()
        assert len(row) == 1
        row[["a", "b"]] = [a, -a]
        row["created"] += age
        return row

    later = rewrite("north", 5, 100.5, pd.Timedelta(days=1))
    earlier = rewrite("south", 7, -1.0, -pd.Timedelta(days=1))
    pd.concat([later, observations, earlier], ignore_index=True).to_parquet(path, index=False)
    return open_feature_store(repo_dir)


def test_asof_read_takes_the_latest_write_of_a_pair(rewritten_store: FeatureStore) -> None:
    """Feast 0.67's file store sorts the writes by created timestamp and then, with an
    unstable sort, by event timestamp, so its own join may answer either write of a pair:
    only row 0, no rewritten pair, is cross-checked here (`check_rows=1`)."""
    entity_df = pd.DataFrame(
        {
            "series_id": ["north", "north", "south", "north"],
            "event_timestamp": START
            + pd.to_timedelta([2 * 60, 5 * 60, 7 * 60, 5 * 60 + 30], unit="min"),
        }
    )

    training, retrieval = get_training_frame_asof(
        rewritten_store, entity_df, max_pit_rows=1, check_rows=1
    )

    assert retrieval == "offline_asof"
    np.testing.assert_array_equal(training["a"].to_numpy(), [2.0, 100.5, 1007.0, 100.5])


def test_asof_read_never_sees_a_later_value(store: FeatureStore) -> None:
    """The sweep of `test_training_never_sees_a_later_value`, starting mid-series: the
    first rows take the observation stamped before the earliest row."""
    offsets = pd.to_timedelta(np.arange(10 * 60 + 25, ROWS * 60, 25), unit="min")
    entity_df = pd.DataFrame({"series_id": "north", "event_timestamp": START + offsets})

    training, retrieval = get_training_frame_asof(store, entity_df, max_pit_rows=1, check_rows=8)

    assert retrieval == "offline_asof"
    floor_step = (offsets // pd.Timedelta(hours=1)).to_numpy(dtype=np.float64)
    np.testing.assert_array_equal(training["a"].to_numpy(), floor_step)


def test_asof_read_that_differs_from_feast_raises(store: FeatureStore) -> None:
    entity_df = pd.DataFrame(
        {"series_id": "south", "event_timestamp": START + pd.to_timedelta(range(6), unit="h")}
    )
    joined, retrieval = get_training_frame_asof(store, entity_df, max_pit_rows=2, check_rows=2)
    assert retrieval == "offline_asof"
    check_against_point_in_time(store, entity_df, joined, 2)  # the frame as read passes

    joined.loc[joined.index[-1], "b"] += 1.0  # the last row is always checked
    with pytest.raises(RuntimeError, match=r"point-in-time join at row 5 \({'series_id': 'south'"):
        check_against_point_in_time(store, entity_df, joined, 2)
    with pytest.raises(ValueError, match="check_rows"):
        get_training_frame_asof(store, entity_df, max_pit_rows=2, check_rows=0)


def test_push_updates_the_online_window(store: FeatureStore, repo: Path) -> None:
    before = read_context_window(store, "east")
    assert before.values[-1, 0] == 2000.0 + ROWS - 1
    fresh = np.arange(INPUT_SIZE * 2, dtype=np.float64).reshape(INPUT_SIZE, 2) + 0.5
    end = START + pd.Timedelta(hours=ROWS + INPUT_SIZE)

    # Columns given in the other order: the store puts them in the view's order.
    push_context_window(store, "east", fresh[:, ::-1], ["b", "a"], end)

    after = read_context_window(open_feature_store(repo), "east")
    np.testing.assert_array_equal(after.values, fresh)
    assert after.window_end == end.tz_localize("UTC")
    log = pd.read_parquet(repo / "data" / "context_window.parquet")
    pushed = log[log["series_id"] == "east"].sort_values("window_end")
    assert len(pushed) == 2  # the window from prepare_feature_repo, then this push
    np.testing.assert_array_equal(np.stack(pushed["a"].iloc[-1]), fresh[:, 0])


def test_push_rejects_a_window_of_the_wrong_shape(store: FeatureStore) -> None:
    with pytest.raises(ValueError, match="shape"):
        push_context_window(store, "east", np.zeros((INPUT_SIZE - 1, 2)), ["a", "b"], START)
    with pytest.raises(ValueError, match="channels"):
        push_context_window(store, "east", np.zeros((INPUT_SIZE, 2)), ["a", "c"], START)


def test_unknown_series_raises(store: FeatureStore) -> None:
    with pytest.raises(UnknownSeriesError, match="'atlantis'") as raised:
        read_context_window(store, "atlantis")
    assert isinstance(raised.value, KeyError)
    assert raised.value.series_id == "atlantis"


def test_single_series_frame_uses_the_default_series_id(tmp_path: Path) -> None:
    frame = make_frame()
    single = frame[frame["series_id"] == "south"].drop(columns="series_id")
    spec = FrameSpec(min_rows=INPUT_SIZE + 4, default_series_id="etth1")

    store = prepare_feature_repo(tmp_path / "repo", single, spec, INPUT_SIZE)

    window = read_context_window(store, "etth1")
    np.testing.assert_array_equal(window.values, single[["a", "b"]].to_numpy()[-INPUT_SIZE:])
    with pytest.raises(UnknownSeriesError):
        read_context_window(store, "south")


def test_definitions_reject_reserved_channel_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        build_definitions(["a", "window_end"], INPUT_SIZE)
    with pytest.raises(ValueError, match="repeat"):
        build_definitions(["a", "a"], INPUT_SIZE)
