"""Latency statistics over a fixed-size window: percentiles, deadline misses, achieved rate.

Pure: callers pass the times (seconds) in; nothing here reads a clock, logs or imports rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Level(IntEnum):
    """Health levels, numerically equal to ``diagnostic_msgs/DiagnosticStatus`` levels."""

    OK = 0
    WARN = 1
    ERROR = 2


class SampleWindow:
    """The last ``capacity`` samples in a preallocated ring buffer."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self._values = np.zeros(capacity, dtype=np.float64)
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def capacity(self) -> int:
        return len(self._values)

    def add(self, value: float) -> None:
        self._values[self._next] = value
        self._next = (self._next + 1) % len(self._values)
        self._count = min(self._count + 1, len(self._values))

    def clear(self) -> None:
        self._next = self._count = 0

    def values(self) -> np.ndarray:
        """Samples oldest first (a copy)."""
        if self._count < len(self._values):
            return self._values[:self._count].copy()
        return np.concatenate([self._values[self._next:], self._values[:self._next]])

    def latest(self) -> float:
        if not self._count:
            raise ValueError("the window is empty")
        return float(self._values[self._next - 1])

    def percentile(self, q: float) -> float:
        """q in [0, 100]; NaN for an empty window."""
        if not self._count:
            return float("nan")
        return float(np.percentile(self._values[:self._count] if self._count < len(self._values) else self._values, q))

    def count_above(self, threshold: float) -> int:
        return int(np.count_nonzero(self.values() > threshold))


class RateMeter:
    """Achieved event rate from the times of the last ``capacity`` events."""

    def __init__(self, capacity: int) -> None:
        self._times = SampleWindow(max(capacity, 2))

    def tick(self, t: float) -> None:
        self._times.add(t)

    def clear(self) -> None:
        self._times.clear()

    def rate(self, now: float | None = None) -> float:
        """Events per second over the window; 0.0 with fewer than two events.

        With ``now``, the span runs to ``now``, so a stream that stopped shows a falling rate.
        """
        times = self._times.values()
        if len(times) < 2:
            return 0.0
        span = (now if now is not None else times[-1]) - times[0]
        return float((len(times) - 1) / span) if span > 0 else 0.0


@dataclass(frozen=True)
class LatencySummary:
    """Statistics of one window against a deadline (seconds)."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    deadline: float
    deadline_misses: int

    @property
    def miss_fraction(self) -> float:
        return self.deadline_misses / self.count if self.count else 0.0


def summarize(window: SampleWindow, deadline: float) -> LatencySummary:
    values = window.values()
    if not len(values):
        nan = float("nan")
        return LatencySummary(0, nan, nan, nan, nan, deadline, 0)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return LatencySummary(len(values), float(p50), float(p95), float(p99), float(values.max()), deadline,
                          int(np.count_nonzero(values > deadline)))


def classify(summary: LatencySummary, achieved_rate: float, target_rate: float, *,
             rate_tolerance: float = 0.9) -> tuple[Level, str]:
    """Health of a control loop: WARN when the p95 latency misses the deadline or the loop runs slow.

    ERROR is not decided here: it belongs to conditions the statistics cannot see (stale or missing
    observations, a failing model).
    """
    if summary.count == 0:
        return Level.WARN, "no chunk computed yet"
    if summary.p95 > summary.deadline:
        return Level.WARN, (f"p95 latency {summary.p95 * 1e3:.1f} ms exceeds the {summary.deadline * 1e3:.1f} ms "
                            f"period ({summary.deadline_misses}/{summary.count} misses)")
    if achieved_rate < rate_tolerance * target_rate:
        return Level.WARN, f"achieved rate {achieved_rate:.2f} Hz below the {target_rate:.2f} Hz target"
    return Level.OK, f"p95 {summary.p95 * 1e3:.1f} ms within the {summary.deadline * 1e3:.1f} ms period"
