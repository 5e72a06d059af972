"""What the latency dashboard shows, without Qt or ROS: sliding windows of the inference node's samples.

Series (milliseconds, except the executed fraction): ``obs_age_ms``, ``plan_ms``, ``denoise_ms``, ``total_ms`` and
``executed_fraction``, each a window of the last ``window`` samples with the time (seconds) they arrived. On top:
p50/p95/p99 and deadline misses of ``total_ms`` against the control period (:func:`sag_ros.latency.summarize`),
the achieved rate (the node's, from ``/diagnostics``, else counted here), the last pruning mask, and the newest
status of each sag diagnostic. Feeders (``source.py``) and views (``widget.py``) run on different threads: every
method takes the lock, and views get copies. ``version`` grows with each change, so a view redraws only then.

Pausing freezes the shown window and mask (samples arriving meanwhile are dropped), so what is exported is what
is on screen; statuses stay live.
"""

from __future__ import annotations

import csv
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sag_ros.latency import LatencySummary, RateMeter, SampleWindow, summarize
from sag_ros.nodes.graph import LATENCY_SERIES

FRACTION_SERIES = "executed_fraction"
SERIES = LATENCY_SERIES + (FRACTION_SERIES,)
LEVEL_NAMES = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}  # diagnostic_msgs/DiagnosticStatus levels
CSV_HEADER = ("time_s", "series", "value")


@dataclass(frozen=True)
class Status:
    """The newest report of one diagnostic status (``name`` as the node reports it)."""

    name: str
    level: int
    message: str
    values: dict[str, str] = field(default_factory=dict)
    time_s: float = 0.0

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES.get(self.level, f"LEVEL {self.level}")

    def value(self, key: str, default: float = math.nan) -> float:
        try:
            return float(self.values[key])
        except (KeyError, ValueError):
            return default


class _Series:
    """Arrival times and values of one series, in two rings of the same capacity."""

    def __init__(self, capacity: int) -> None:
        self.times = SampleWindow(capacity)
        self.values = SampleWindow(capacity)

    def add(self, t: float, value: float) -> None:
        self.times.add(t)
        self.values.add(value)

    def resized(self, capacity: int) -> "_Series":
        out = _Series(capacity)
        for t, v in zip(self.times.values()[-capacity:], self.values.values()[-capacity:]):
            out.add(float(t), float(v))
        return out


class DashboardModel:
    """Sliding windows of the last ``window`` samples per series; ``period_ms`` fixes the deadline (else
    the node's ``period_ms`` from ``/diagnostics`` is used)."""

    def __init__(self, window: int = 200, period_ms: float | None = None) -> None:
        if window < 2:
            raise ValueError(f"window={window} must be >= 2 samples")
        self._lock = threading.Lock()
        self._window = window
        self._series = {name: _Series(window) for name in SERIES}
        self._arrivals = RateMeter(window)
        self._fixed_period_ms = period_ms
        self._mask: np.ndarray | None = None
        self._mask_time_s = math.nan
        self._statuses: dict[str, Status] = {}
        self._paused = False
        self.version = 0

    # -- feeding (any thread) ---------------------------------------------------------------------------------

    def add_sample(self, series: str, t: float, value: float) -> None:
        """One sample of ``series`` arriving at ``t`` seconds; ignored while paused."""
        if series not in self._series:
            raise ValueError(f"unknown series {series!r}; expected one of {SERIES}")
        with self._lock:
            if self._paused:
                return
            self._series[series].add(t, value)
            if series == "total_ms":
                self._arrivals.tick(t)
            self.version += 1

    def set_mask(self, mask: np.ndarray, t: float) -> None:
        """The pruning mask [steps, blocks] (True = pruned) of the newest chunk; ignored while paused."""
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-d [steps, blocks], got shape {mask.shape}")
        with self._lock:
            if self._paused:
                return
            self._mask, self._mask_time_s = mask.copy(), t
            self.version += 1

    def set_status(self, status: Status) -> None:
        with self._lock:
            self._statuses[status.name] = status
            self.version += 1

    # -- controls ---------------------------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = bool(paused)
            self.version += 1

    @property
    def window(self) -> int:
        return self._window

    def set_window(self, window: int) -> None:
        """Keep the last ``window`` samples per series from now on (the newest ones survive a shrink)."""
        if window < 2:
            raise ValueError(f"window={window} must be >= 2 samples")
        with self._lock:
            if window == self._window:
                return
            self._series = {name: s.resized(window) for name, s in self._series.items()}
            self._arrivals = RateMeter(window)
            for t in self._series["total_ms"].times.values():
                self._arrivals.tick(float(t))
            self._window = window
            self.version += 1

    def clear(self) -> None:
        with self._lock:
            self._series = {name: _Series(self._window) for name in SERIES}
            self._arrivals.clear()
            self._mask, self._mask_time_s = None, math.nan
            self.version += 1

    # -- views (copies) ---------------------------------------------------------------------------------------

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(arrival times in seconds, values), oldest first."""
        with self._lock:
            s = self._series[name]
            return s.times.values(), s.values.values()

    def count(self, name: str) -> int:
        with self._lock:
            return len(self._series[name].values)

    @property
    def period_ms(self) -> float:
        """The control period: fixed at construction, else the node's ``period_ms``; NaN while unknown."""
        with self._lock:
            return self._period_ms()

    def _period_ms(self) -> float:
        if self._fixed_period_ms is not None:
            return float(self._fixed_period_ms)
        for status in self._sag_loop_statuses():
            period = status.value("period_ms")
            if math.isfinite(period):
                return period
        return math.nan

    def summary(self, series: str = "total_ms") -> LatencySummary:
        """p50/p95/p99, max and deadline misses (ms) of ``series`` in the window, against the period."""
        with self._lock:
            return summarize(self._series[series].values, self._period_ms())

    def rates(self) -> tuple[float, float]:
        """(achieved, target) rate in Hz: the node's own numbers when it reports them, else counted from
        arrivals here (the target is NaN then)."""
        with self._lock:
            for status in self._sag_loop_statuses():
                achieved, target = status.value("achieved_rate_hz"), status.value("target_rate_hz")
                if math.isfinite(achieved):
                    return achieved, target
            return self._arrivals.rate(), math.nan

    def histogram(self, series: str = "total_ms", bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
        """(counts, bin edges) of ``series`` in the window; empty arrays for an empty window."""
        _, values = self.series(series)
        if not len(values):
            return np.zeros(0, np.int64), np.zeros(0)
        return np.histogram(values, bins=bins)

    @property
    def mask(self) -> np.ndarray | None:
        with self._lock:
            return None if self._mask is None else self._mask.copy()

    def statuses(self) -> list[Status]:
        """Newest status per name, sorted by name."""
        with self._lock:
            return [self._statuses[k] for k in sorted(self._statuses)]

    def _sag_loop_statuses(self) -> list[Status]:
        return [s for _, s in sorted(self._statuses.items()) if "period_ms" in s.values]

    # -- CSV --------------------------------------------------------------------------------------------------

    def export_csv(self, path: str | Path) -> int:
        """Write the shown window as rows ``time_s,series,value`` (by time); returns the number of rows."""
        rows = []
        with self._lock:
            for name, s in self._series.items():
                rows += [(float(t), name, float(v)) for t, v in zip(s.times.values(), s.values.values())]
        rows.sort(key=lambda r: r[0])
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            writer.writerows((repr(t), name, repr(v)) for t, name, v in rows)
        return len(rows)


def read_csv(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Series written by :meth:`DashboardModel.export_csv`: name -> (times, values)."""
    columns: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header != CSV_HEADER:
            raise ValueError(f"{path}: header {header} is not {CSV_HEADER}")
        for t, name, value in reader:
            times, values = columns.setdefault(name, ([], []))
            times.append(float(t))
            values.append(float(value))
    return {name: (np.array(t), np.array(v)) for name, (t, v) in columns.items()}
