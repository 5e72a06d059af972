"""Window statistics of sag_ros.latency: pure, no rclpy."""

import math

import numpy as np
import pytest

from sag_ros.latency import Level, RateMeter, SampleWindow, classify, summarize


def test_window_keeps_the_last_samples_oldest_first():
    window = SampleWindow(3)
    for v in [1.0, 2.0, 3.0, 4.0, 5.0]:
        window.add(v)
    assert len(window) == 3
    assert window.values().tolist() == [3.0, 4.0, 5.0]
    assert window.latest() == 5.0
    window.clear()
    assert len(window) == 0 and math.isnan(window.percentile(50))


def test_percentiles_and_deadline_misses_match_numpy():
    rng = np.random.default_rng(0)
    samples = rng.exponential(0.05, size=250)
    window = SampleWindow(100)
    for s in samples:
        window.add(s)
    last = samples[-100:]
    summary = summarize(window, deadline=0.1)
    assert summary.count == 100
    assert summary.p50 == pytest.approx(np.percentile(last, 50))
    assert summary.p95 == pytest.approx(np.percentile(last, 95))
    assert summary.p99 == pytest.approx(np.percentile(last, 99))
    assert summary.max == pytest.approx(last.max())
    assert summary.deadline_misses == int((last > 0.1).sum()) == window.count_above(0.1)
    assert summary.miss_fraction == pytest.approx(summary.deadline_misses / 100)


def test_rate_meter():
    meter = RateMeter(10)
    assert meter.rate() == 0.0
    for i in range(20):
        meter.tick(i * 0.1)
    assert meter.rate() == pytest.approx(10.0)
    # the stream stopped 0.9 s ago: the rate over the window falls
    assert meter.rate(now=1.9 + 0.9) == pytest.approx(9 / 1.8)


def test_classify_levels():
    fast, slow = SampleWindow(10), SampleWindow(10)
    for _ in range(10):
        fast.add(0.02)
        slow.add(0.15)
    assert classify(summarize(fast, 0.1), 10.0, 10.0)[0] is Level.OK
    level, message = classify(summarize(slow, 0.1), 6.0, 10.0)
    assert level is Level.WARN and "exceeds" in message
    assert classify(summarize(fast, 0.1), 5.0, 10.0)[0] is Level.WARN  # fast chunks but a slow loop
    assert classify(summarize(SampleWindow(3), 0.1), 0.0, 10.0)[0] is Level.WARN
    assert int(Level.ERROR) == 2


def test_window_rejects_empty_capacity():
    with pytest.raises(ValueError, match="capacity"):
        SampleWindow(0)
