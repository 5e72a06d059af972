"""The graph's timing replayed on a virtual clock: with no latency it is `sag eval`'s lockstep loop, with a latency
each tick executes the newest arrived chunk's action due then, and a tick with none due holds the robot."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import sag_ros.nodes.replay as replay
from sag_ros.nodes.graph import default_config_path
from sag_ros.nodes.replay import GraphReplay, GraphTiming, replay_episode
from sag_ros.predictor import PolicyPredictor
from sag_ros.sim.evaluate import rollout
from sag_ros.sim.task import get_task

PUSHT = get_task("pusht")  # 10 Hz, absolute position targets


class ChunkIdPredictor:
    """Chunk i's action k is the position (100 + 10 k, 100 + i): which chunk and which of its actions ran is
    readable from the executed action. Records (seed, num_actions) of every call."""

    n_obs_steps = 2
    actions_from_now = 15
    chunk_length = PolicyPredictor.chunk_length  # the real rule: 0 = all 15, more refused

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, obs: dict[str, np.ndarray], seed: int, num_actions: int | None = None) -> np.ndarray:
        chunk = len(self.calls)
        self.calls.append((seed, num_actions))
        count = num_actions or 8
        return np.stack([[100.0 + 10 * k, 100.0 + chunk] for k in range(count)])


class SeededPredictor(ChunkIdPredictor):
    """Actions drawn from the seed around the observed agent: what a policy with its noise looks like to the loop."""

    def __call__(self, obs, seed, num_actions=None):
        super().__call__(obs, seed, num_actions)
        rng = np.random.default_rng(seed)
        return np.clip(obs["state"][-1] + rng.normal(0, 40, size=(num_actions or 8, 2)), 0, 512)


@pytest.fixture
def recorded_actions(monkeypatch) -> list[np.ndarray]:
    """Every action the replay's Push-T adapter executes, in order."""
    executed: list[np.ndarray] = []

    def recording_adapter():
        adapter = PUSHT.make_adapter()
        step = adapter.step

        def recorded_step(action):
            executed.append(np.asarray(action).copy())
            result = step(action)
            return dataclasses.replace(result, done=result.done or len(executed) >= 12)  # short episodes

        adapter.step = recorded_step
        return adapter

    task = dataclasses.replace(PUSHT, make_adapter=recording_adapter)
    monkeypatch.setattr(replay, "get_task", lambda name: task)
    return executed


def _chunk_and_index(action: np.ndarray) -> tuple[int, int]:
    return int(round(action[1] - 100)), int(round((action[0] - 100) / 10))


def test_no_latency_and_one_tick_offset_replays_sag_evals_lockstep_episode():
    timing = GraphTiming(latency_s=0.0, chunk_rate_hz=PUSHT.control_hz / 8, actions_per_chunk=8,
                         execution_offset_s=1.0 / PUSHT.control_hz)
    lockstep, replayed = SeededPredictor(), SeededPredictor()
    a = rollout(lockstep, "pusht", seed=100003, noise_seed=1)
    b = replay_episode(replayed, "pusht", seed=100003, timing=timing, noise_seed=1)
    assert (b.score, b.success, b.steps, b.held_steps) == (a.score, a.success, a.steps, 0)
    assert [seed for seed, _ in replayed.calls] == [seed for seed, _ in lockstep.calls]


def test_each_tick_executes_the_newest_arrived_chunks_action_due_then(recorded_actions):
    # 10 Hz sim and chunks, 250 ms latency: the worker takes a chunk every third tick and each arrives 2.5 ticks
    # after its frame, so the first step runs at tick 3 with chunk 0's action 3 (the sim waited for it).
    result = replay_episode(ChunkIdPredictor(), "pusht", seed=100000, timing=GraphTiming(latency_s=0.25))
    ran = [_chunk_and_index(a) for a in recorded_actions]
    assert ran[:7] == [(0, 3), (0, 4), (0, 5), (1, 3), (1, 4), (1, 5), (2, 3)]
    assert result.steps == len(ran) == 12 and result.held_steps == 0


def test_a_tick_with_no_action_due_holds_the_robot(recorded_actions):
    # Chunks of two actions arriving 2.5 ticks late: by the time one arrives both of its actions have passed.
    result = replay_episode(ChunkIdPredictor(), "pusht", seed=100000,
                            timing=GraphTiming(latency_s=0.25, actions_per_chunk=2))
    assert result.held_steps == result.steps == 12
    adapter = PUSHT.make_adapter()
    adapter.reset(100000)
    start = adapter.observation()["state"]
    adapter.close()
    for action in recorded_actions:  # the agent held where it started (its position is an absolute target)
        np.testing.assert_array_equal(action, start)


def test_without_waiting_the_episode_runs_from_the_first_tick_on_holds(recorded_actions):
    result = replay_episode(ChunkIdPredictor(), "pusht", seed=100000,
                            timing=GraphTiming(latency_s=0.25, wait_for_actions=False))
    assert result.held_steps == 2  # ticks 1 and 2, before chunk 0 arrives; tick 3 runs its action 3
    assert _chunk_and_index(recorded_actions[2]) == (0, 3)


def test_timing_from_the_shipped_parameter_file():
    timing = GraphTiming.from_parameter_file(default_config_path(), latency_s=0.02)
    assert timing == GraphTiming(latency_s=0.02, chunk_rate_hz=10.0, action_rate_hz=0.0, actions_per_chunk=0,
                                 execution_offset_s=0.0, sim_rate_hz=0.0, wait_for_actions=True)


def test_parameters_set_on_top_of_the_file_are_validated_as_the_nodes_would():
    timing = GraphTiming.from_parameter_file(default_config_path(), 0.02, {"sag_inference": {
        "execution_offset_s": 0.0125, "control_rate_hz": 5}})  # an int for a float, as `-p` allows
    assert (timing.execution_offset_s, timing.chunk_rate_hz) == (0.0125, 5.0)
    with pytest.raises(ValueError, match="unknown node 'sag_infrence'"):
        GraphTiming.from_parameter_file(default_config_path(), 0.02, {"sag_infrence": {"seed": 1}})
    with pytest.raises(ValueError, match="unknown parameters"):
        GraphTiming.from_parameter_file(default_config_path(), 0.02, {"sag_inference": {"offset": 1.0}})


def test_a_timer_triggered_graph_or_bad_timing_is_refused(tmp_path: Path):
    params = tmp_path / "timer.yaml"
    params.write_text(default_config_path().read_text().replace("trigger: frame", "trigger: timer"))
    with pytest.raises(ValueError, match="trigger 'timer' cannot be replayed"):
        GraphTiming.from_parameter_file(params, latency_s=0.02)
    for bad in ({"latency_s": -0.01}, {"latency_s": float("nan")}, {"latency_s": ()}, {"latency_s": (0.02, -0.01)},
                {"latency_s": 0.0, "chunk_rate_hz": 0.0},
                {"latency_s": 0.0, "actions_per_chunk": -1}):
        with pytest.raises(ValueError):
            GraphTiming(**bad)


def test_measured_latencies_are_drawn_per_chunk_at_a_quantile_shared_by_every_method():
    fast = GraphTiming(latency_s=[0.04, 0.01, 0.03, 0.02])  # kept sorted
    slow = GraphTiming(latency_s=(0.1, 0.2, 0.3, 0.4))
    assert fast.latency_s == (0.01, 0.02, 0.03, 0.04)
    draws = [(fast.chunk_latency_ns(100000, 0, step), slow.chunk_latency_ns(100000, 0, step)) for step in range(400)]
    assert all(b == 10 * a for a, b in draws)  # the same quantile at each step: slow chunks fall on the same steps
    assert draws == [(fast.chunk_latency_ns(100000, 0, step), slow.chunk_latency_ns(100000, 0, step))
                     for step in range(400)]  # and on every run
    counts = np.unique([a for a, _ in draws], return_counts=True)[1]
    assert len(counts) == 4 and counts.min() > 70  # every measured value drawn, about a quarter of the time each
    other_episode = [fast.chunk_latency_ns(100001, 0, step) for step in range(400)]
    assert other_episode != [a for a, _ in draws]
    assert GraphTiming(latency_s=0.02).chunk_latency_ns(100000, 0, 7) == 20_000_000


def test_one_measured_latency_replays_as_that_constant(recorded_actions):
    replay_episode(ChunkIdPredictor(), "pusht", seed=100000, timing=GraphTiming(latency_s=0.25))
    constant = list(recorded_actions)
    recorded_actions.clear()
    replay_episode(ChunkIdPredictor(), "pusht", seed=100000, timing=GraphTiming(latency_s=[0.25, 0.25]))
    np.testing.assert_array_equal(recorded_actions, constant)


def test_a_chunk_drawn_slower_than_the_period_keeps_the_worker_busy():
    # Half the chunks take 50 ms, half 350 ms at a 10 Hz chunk rate: a slow one blocks the next three frames.
    quick, jittery = ChunkIdPredictor(), ChunkIdPredictor()
    replay_episode(quick, "pusht", seed=100000, timing=GraphTiming(latency_s=0.05, wait_for_actions=False))
    result = replay_episode(jittery, "pusht", seed=100000,
                            timing=GraphTiming(latency_s=[0.05, 0.35], wait_for_actions=False))
    assert len(quick.calls) == result.steps == 300  # a chunk from every frame but the last
    assert 300 / 4 < len(jittery.calls) < 300 / 2


def test_the_replay_runner_pickles_for_worker_processes():
    import pickle

    runner = pickle.loads(pickle.dumps(GraphReplay(GraphTiming(latency_s=0.02))))
    assert runner.timing.latency_s == 0.02


def test_more_actions_than_the_policy_predicts_are_refused():
    with pytest.raises(ValueError, match="actions_per_chunk=16, but the policy predicts 15"):
        replay_episode(ChunkIdPredictor(), "pusht", seed=100000,
                       timing=GraphTiming(latency_s=0.0, actions_per_chunk=16))
