"""The deployed loop's timing rules, ROS-free: which frames start a chunk, which action of the newest chunk is
due at a simulator tick, and what the robot is given when none is.

The nodes apply them on ROS time (:mod:`sag_ros.nodes.inference_node`, :mod:`sag_ros.nodes.sim_node`);
:mod:`sag_ros.nodes.replay` applies the same rules on a virtual clock, so an evaluation can run the graph's timing
(chunk rate, action spacing, latency) in lockstep, repeatably.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from sag_ros.sim.task import TaskSpec


class FrameGate:
    """Which observations start a chunk (``trigger: frame``, the default); ROS-free.

    A token bucket on the frames' stamps: a chunk is due one control period after the previous one was due, and the
    first frame stamped no earlier than that (less 40 % of the camera's frame interval, so stamp jitter never skips
    a due frame) that can start it does. So a camera at k times the control rate starts a chunk on every k-th frame,
    one at the control rate on every frame, and one at another rate (12 or 15 Hz for 10 Hz) at uneven gaps that
    average the control rate: chunks never come faster than that on average. A due frame that cannot start the
    chunk (the worker still busy with the last one) leaves it due, so the next frame starts it: under overload the
    loop runs as fast as the model allows rather than skipping to the next period. A camera that paused (a frame a
    period or more past due) or restarted (stamps going back) starts afresh.
    """

    JITTER_FRACTION = 0.4

    def __init__(self, period_s: float) -> None:
        self.period_ns = int(round(period_s * 1e9))
        self._last_stamp_ns: int | None = None
        self._due_ns: int | None = None

    def admit(self, stamp_ns: int, start: Callable[[], bool] = lambda: True) -> bool:
        """Whether a chunk started from the frame stamped ``stamp_ns``: when it is due, ``start()`` tries to start
        it and says whether it did; only a started chunk uses up the period."""
        period, due = self.period_ns, self._due_ns
        previous, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if due is None or stamp_ns >= due + period or stamp_ns < due - 2 * period:
            next_due = stamp_ns + period
        else:
            frame_interval = period if previous is None else min(max(stamp_ns - previous, 0), period)
            if stamp_ns < due - int(self.JITTER_FRACTION * frame_interval):
                return False
            next_due = due + period
        if not start():
            return False
        self._due_ns = next_due
        return True



class ActionSchedule:
    """The actions of the newest chunk, each with its due time (ns); ROS-free.

    Chunks stamped before :meth:`reset` (observations of a previous episode) are ignored.
    """

    def __init__(self) -> None:
        self._times = np.zeros(0, dtype=np.int64)
        self._actions = np.zeros((0, 0))
        self._not_before_ns = 0
        self.chunks_received = 0

    def reset(self, now_ns: int) -> None:
        self._times, self._actions = self._times[:0], self._actions[:0]
        self._not_before_ns = now_ns
        self.chunks_received = 0

    def replace(self, times_ns: np.ndarray, actions: np.ndarray) -> bool:
        """Adopt a new chunk; returns False (and keeps the old one) when it predates the episode."""
        if len(times_ns) == 0 or times_ns[0] < self._not_before_ns:
            return False
        self._times, self._actions = np.asarray(times_ns), np.asarray(actions)
        self.chunks_received += 1
        return True

    def pop_due(self, now_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """Drop actions due before ``now - tolerance``; return (and remove) the one due by ``now + tolerance``."""
        keep = self._times >= now_ns - tolerance_ns
        self._times, self._actions = self._times[keep], self._actions[keep]
        if len(self._times) and self._times[0] <= now_ns + tolerance_ns:
            action = self._actions[0]
            self._times, self._actions = self._times[1:], self._actions[1:]
            return action
        return None


def fallback_action(spec: TaskSpec, last_action: np.ndarray | None,
                    observation: Mapping[str, np.ndarray]) -> np.ndarray:
    """Action for a step with no chunk action due: the last one where repeating it holds the robot (absolute
    targets), else the task's hold action for the current observation, so a delta is never re-applied."""
    if spec.absolute_actions and last_action is not None:
        return last_action
    return spec.hold_action(observation)
