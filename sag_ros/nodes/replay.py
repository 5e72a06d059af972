"""The deployed graph's timing, replayed in lockstep on a virtual clock: what a latency costs, repeatably.

``sag eval`` plays Diffusion Policy's protocol: the world waits while a chunk is computed, and its Ta actions run
from the observation's own step. On the robot (``sag-bringup``, ``ros2 launch``) the world does not wait: the
simulator ticks at its rate, the inference node starts a chunk from a frame at most ``control_rate_hz`` times a
second (:class:`~sag_ros.nodes.loop_timing.FrameGate`), the chunk arrives a latency later stamped against that
frame, and each tick executes the action due then from the newest chunk, or holds the robot when none is
(:class:`~sag_ros.nodes.loop_timing.ActionSchedule`, :func:`~sag_ros.nodes.loop_timing.fallback_action`).
:func:`replay_episode` runs those same rules with a fixed latency in place of ROS and wall time, so the loop's
timing can be evaluated over hundreds of episodes, paired across methods, with no DDS in the way and the same
result on every run; how much of a gap between ``sag eval`` and the robot is timing becomes a measurement.

The latency is a constant, or a distribution: latencies measured over ROS (``sag bench-ros`` records every chunk's
observation-to-action time), from which each chunk draws one. The draw is a quantile chosen by the chunk's episode
step and seeds, so two methods replayed from their own measurements meet their slow chunks at the same steps and
their episodes still pair. Draws are independent chunk to chunk (a machine's slow spells are not). What is not
replayed: frames lost or stale, and the actions' clamping to the task's bounds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from sag_ros.nodes.graph import CONFIGS, INFERENCE, SIM, build_config, load_node_parameters
from sag_ros.nodes.loop_timing import ActionSchedule, FrameGate, fallback_action
from sag_ros.sim.evaluate import ChunkPredictor, EpisodeResult, ObservationHistory, chunk_seed, write_gif
from sag_ros.sim.task import get_task


LATENCY_STREAM = 0x1A7E  # seeds the latency draws apart from the chunk's sampling noise (same chunk_seed)


class HorizonPredictor(ChunkPredictor, Protocol):
    """A chunk predictor that also says how many actions a chunk carries
    (:meth:`sag_ros.predictor.PolicyPredictor.chunk_length`)."""

    def chunk_length(self, actions_per_chunk: int) -> int: ...


@dataclass(frozen=True)
class GraphTiming:
    """The timing of the deployed graph that a replay reproduces, with the parameters' names and meanings.

    ``latency_s``: from a frame's stamp to its chunk's arrival at the simulator (``sag bench-ros``'s
    observation-to-action time; on the topics, ``/sag/latency/obs_age_ms`` plus ``total_ms``): one value for every
    chunk, or measured values (kept sorted) for each chunk to draw from (:meth:`chunk_latency_ns`); ``chunk_rate_hz``,
    ``action_rate_hz`` (0 = the task's control rate), ``actions_per_chunk`` (0 = every predicted action from the
    frame's step on) and ``execution_offset_s``: the inference node's parameters; ``sim_rate_hz`` (0 = the task's)
    and ``wait_for_actions``: the simulator's.
    """

    latency_s: float | tuple[float, ...]
    chunk_rate_hz: float = 10.0
    action_rate_hz: float = 0.0
    actions_per_chunk: int = 0
    execution_offset_s: float = 0.0
    sim_rate_hz: float = 0.0
    wait_for_actions: bool = True

    def __post_init__(self) -> None:
        """The latency is the replay's own; every other value is checked by the node config that owns it."""
        if not isinstance(self.latency_s, (int, float)):
            if not len(self.latency_s):
                raise ValueError("no latencies to draw from")
            object.__setattr__(self, "latency_s", tuple(sorted(float(x) for x in self.latency_s)))
        for latency in np.atleast_1d(self.latency_s):
            if not (math.isfinite(latency) and latency >= 0):
                raise ValueError(f"latency {latency} s must be finite and >= 0")
        build_config(INFERENCE, {"control_rate_hz": self.chunk_rate_hz, "action_rate_hz": self.action_rate_hz,
                                 "actions_per_chunk": self.actions_per_chunk,
                                 "execution_offset_s": self.execution_offset_s})
        build_config(SIM, {"control_rate_hz": self.sim_rate_hz, "wait_for_actions": self.wait_for_actions})

    def chunk_latency_ns(self, env_seed: int, noise_seed: int, step: int) -> int:
        """The latency of the chunk planned at ``step``: the constant, or the measured latency at a quantile drawn
        from the chunk's seeds (the same quantile for every method, so slow chunks fall on the same steps)."""
        if isinstance(self.latency_s, (int, float)):
            return int(round(self.latency_s * 1e9))
        quantile = np.random.default_rng([LATENCY_STREAM, chunk_seed(noise_seed, env_seed, step)]).random()
        return int(round(self.latency_s[int(quantile * len(self.latency_s))] * 1e9))

    @classmethod
    def from_parameter_file(cls, path: str | Path, latency_s: float | tuple[float, ...],
                            overrides: Mapping[str, Mapping[str, Any]] | None = None) -> "GraphTiming":
        """The timing a ROS 2 parameter file (``config/sag_nodes.yaml`` or a copy) gives the graph, with
        ``overrides`` ({node: {parameter: value}}, as ``-p`` would set them) on top. Only frame triggering is
        replayed: a timer's phase against the camera is set by when the processes start."""
        params = load_node_parameters(Path(path))
        for node, values in (overrides or {}).items():
            if node not in CONFIGS:
                raise ValueError(f"unknown node {node!r}; the graph's nodes are {sorted(CONFIGS)}")
            params.setdefault(node, {}).update(values)
        inference, sim = build_config(INFERENCE, params.get(INFERENCE, {})), build_config(SIM, params.get(SIM, {}))
        if inference.trigger != "frame":
            raise ValueError(f"{path}: trigger '{inference.trigger}' cannot be replayed; only 'frame' can")
        return cls(latency_s=latency_s, chunk_rate_hz=inference.control_rate_hz,
                   action_rate_hz=inference.action_rate_hz, actions_per_chunk=inference.actions_per_chunk,
                   execution_offset_s=inference.execution_offset_s, sim_rate_hz=sim.control_rate_hz,
                   wait_for_actions=sim.wait_for_actions)


@dataclass(frozen=True)
class GraphReplay:
    """A picklable episode runner for :func:`sag_ros.sim.evaluate.evaluate`: plays each episode with ``timing``."""

    timing: GraphTiming

    def __call__(self, predictor: HorizonPredictor, task_name: str, seed: int, noise_seed: int = 0,
                 video_path: Path | None = None) -> EpisodeResult:
        return replay_episode(predictor, task_name, seed, self.timing, noise_seed, video_path)


def replay_episode(predictor: HorizonPredictor, task_name: str, seed: int, timing: GraphTiming, noise_seed: int = 0,
                   video_path: Path | None = None) -> EpisodeResult:
    """One episode through the graph's timing on a virtual clock (times in integer ns, as the nodes keep them).

    Each tick, in the simulator node's order: deliver a chunk that has arrived by now, execute the action due
    now (or hold), step, then publish the frame, which may start a chunk if the worker is free. A chunk planned
    at episode step s takes the sampling seed ``sag eval`` gives step s, so with no latency, an execution offset
    of one tick and the task's own rates a replay plays ``sag eval``'s episodes action for action.
    """
    task = get_task(task_name)
    sim_rate_hz = timing.sim_rate_hz or task.control_hz
    tick_ns, tolerance_ns = int(round(1e9 / sim_rate_hz)), int(0.5e9 / sim_rate_hz)  # the sim node's
    action_ns = 1e9 / (timing.action_rate_hz or task.control_hz)
    offset_ns = int(round(timing.execution_offset_s * 1e9))
    num_actions = predictor.chunk_length(timing.actions_per_chunk)
    adapter = task.make_adapter()
    try:
        adapter.reset(seed)
        observation = adapter.observation()
        history = ObservationHistory(observation, predictor.n_obs_steps)
        gate, schedule = FrameGate(1.0 / timing.chunk_rate_hz), ActionSchedule()
        schedule.reset(0)
        in_flight: tuple[int, np.ndarray, np.ndarray] | None = None  # (arrival, due times, actions)
        rewards, latencies, frames = [], [], []
        steps, held, success, last_action = 0, 0, False, None
        tick = now_ns = 0

        def start_chunk() -> bool:
            nonlocal in_flight  # now_ns and steps: the tick's, read when the gate calls
            if in_flight is not None:  # the worker is still on the last chunk
                return False
            start = time.perf_counter()
            actions = predictor(history.stacked(), seed=chunk_seed(noise_seed, seed, steps),
                                num_actions=num_actions)
            latencies.append(time.perf_counter() - start)  # the compute measured; the replay uses latency_s
            due = now_ns + offset_ns + np.round(np.arange(len(actions)) * action_ns).astype(np.int64)
            in_flight = (now_ns + timing.chunk_latency_ns(seed, noise_seed, steps), due, actions)
            return True

        while True:
            now_ns = tick * tick_ns
            if in_flight is not None and in_flight[0] <= now_ns:
                schedule.replace(in_flight[1], in_flight[2])
                in_flight = None
            if tick > 0 and not (timing.wait_for_actions and schedule.chunks_received == 0):
                action = schedule.pop_due(now_ns, tolerance_ns)
                if action is None:
                    held += 1
                    action = fallback_action(task, last_action, observation)
                last_action = action
                result = adapter.step(action)
                steps += 1
                rewards.append(result.reward)
                success = success or result.success
                observation = adapter.observation()
                history.append(observation)
                if video_path is not None:
                    frames.append(adapter.render_frame())
                if result.done:
                    break
            gate.admit(now_ns, start_chunk)
            tick += 1
        if video_path is not None:
            write_gif(video_path, frames, task.control_hz)
        return EpisodeResult(seed, task.episode_score(rewards), success, steps, latencies, held)
    finally:
        adapter.close()
