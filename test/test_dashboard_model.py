"""Dashboard model (no Qt, no ROS): window statistics via sag_ros.latency, pausing, resizing, CSV round trip."""

import math

import numpy as np
import pytest

from sag_ros.dashboard.model import SERIES, DashboardModel, Status, read_csv
from sag_ros.latency import SampleWindow, summarize


def _feed(model, values, series="total_ms", t0=0.0, dt=0.1):
    for i, v in enumerate(values):
        model.add_sample(series, t0 + i * dt, float(v))


def test_percentiles_and_misses_over_the_sliding_window():
    model = DashboardModel(window=50, period_ms=90.0)
    values = np.random.default_rng(0).gamma(4.0, 20.0, size=120)
    _feed(model, values)
    window = values[-50:]
    s = model.summary()
    assert s.count == 50 and s.deadline == 90.0
    assert s.p50 == pytest.approx(np.percentile(window, 50))
    assert s.p95 == pytest.approx(np.percentile(window, 95))
    assert s.p99 == pytest.approx(np.percentile(window, 99))
    assert s.max == window.max()
    assert s.deadline_misses == int((window > 90.0).sum()) > 0
    ref = SampleWindow(50)
    for v in values:
        ref.add(v)
    assert s == summarize(ref, 90.0)  # the same numbers as the node's own statistics
    times, shown = model.series("total_ms")
    np.testing.assert_array_equal(shown, window)
    np.testing.assert_allclose(times, np.arange(70, 120) * 0.1)


def test_resizing_keeps_the_newest_samples():
    model = DashboardModel(window=100, period_ms=50.0)
    _feed(model, np.arange(100.0))
    model.set_window(20)
    assert model.window == 20 and model.count("total_ms") == 20
    np.testing.assert_array_equal(model.series("total_ms")[1], np.arange(80.0, 100.0))
    assert model.summary().deadline_misses == 20
    model.set_window(40)  # growing keeps what is there, and fills up again
    _feed(model, [1.0, 2.0], t0=20.0)
    np.testing.assert_array_equal(model.series("total_ms")[1], np.r_[np.arange(80.0, 100.0), 1.0, 2.0])
    with pytest.raises(ValueError, match="window"):
        model.set_window(1)
    with pytest.raises(ValueError, match="unknown series"):
        model.add_sample("latency", 0.0, 1.0)


def test_pause_freezes_samples_and_mask_but_not_statuses():
    model = DashboardModel(window=10)
    _feed(model, [1.0, 2.0])
    model.set_mask(np.eye(3, dtype=bool), 0.2)
    model.set_paused(True)
    version = model.version
    _feed(model, [7.0, 8.0], t0=1.0)
    model.set_mask(np.zeros((3, 3), bool), 1.0)
    assert model.version == version and model.count("total_ms") == 2
    np.testing.assert_array_equal(model.mask, np.eye(3, dtype=bool))
    model.set_status(Status("/sag_inference: inference loop", 2, "newest observation is 900 ms old"))
    assert model.version > version and model.statuses()[0].level_name == "ERROR"
    model.set_paused(False)
    _feed(model, [3.0], t0=2.0)
    np.testing.assert_array_equal(model.series("total_ms")[1], [1.0, 2.0, 3.0])


def test_period_and_rates_come_from_the_node_diagnostics():
    model = DashboardModel(window=20)
    _feed(model, [40.0, 60.0, 120.0], dt=0.5)  # 3 arrivals over 1 s
    assert math.isnan(model.period_ms) and model.summary().deadline_misses == 0
    achieved, target = model.rates()
    assert achieved == pytest.approx(2.0) and math.isnan(target)
    model.set_status(Status("sag_camera", 0, "ok", {"rate_hz": "30.0"}))
    model.set_status(Status("/sag_inference: inference loop", 1, "slow", {
        "period_ms": "100.000", "achieved_rate_hz": "8.500", "target_rate_hz": "10.0"}))
    assert model.period_ms == 100.0 and model.summary().deadline_misses == 1
    assert model.rates() == (8.5, 10.0)
    assert DashboardModel(period_ms=50.0).period_ms == 50.0  # fixed wins over the diagnostics


def test_histogram_counts_the_window():
    model = DashboardModel(window=30)
    assert len(model.histogram()[0]) == 0
    _feed(model, np.linspace(10.0, 20.0, 40))
    counts, edges = model.histogram(bins=5)
    assert counts.sum() == 30 and len(edges) == 6 and edges[0] == pytest.approx(np.linspace(10, 20, 40)[10])


def test_csv_export_round_trips(tmp_path):
    model = DashboardModel(window=25)
    rng = np.random.default_rng(1)
    for i in range(40):
        for j, name in enumerate(SERIES):
            model.add_sample(name, i * 0.1 + j * 1e-4, float(rng.random() * 100))
    path = tmp_path / "window.csv"
    assert model.export_csv(path) == 25 * len(SERIES)
    loaded = read_csv(path)
    assert set(loaded) == set(SERIES)
    for name in SERIES:
        times, values = model.series(name)
        np.testing.assert_array_equal(loaded[name][0], times)  # exact: floats are written with repr
        np.testing.assert_array_equal(loaded[name][1], values)
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        read_csv(tmp_path / "other.csv")
