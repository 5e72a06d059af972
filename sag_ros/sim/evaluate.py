"""Closed-loop evaluation of any chunk predictor on a task, in parallel over processes.

The rollout keeps the last To observations, asks the predictor for a chunk and executes its Ta actions
before asking again (Diffusion Policy's receding horizon). It knows nothing of the policy: a predictor is
any callable ``obs -> actions`` built in each worker by a picklable factory, so dense, SAG and compiled
variants are evaluated by the same code.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np
from tqdm import tqdm

from sag_ros.sim.task import get_task


class ChunkPredictor(Protocol):
    """obs entries stacked over To steps ([To, ...] arrays) -> the actions from the observation's step on: the
    policy's Ta to execute, or ``num_actions`` of its horizon."""

    n_obs_steps: int

    def __call__(self, obs: dict[str, np.ndarray], seed: int, num_actions: int | None = None) -> np.ndarray: ...


PredictorFactory = Callable[[], ChunkPredictor]


class ObservationHistory:
    """The last To observations of an episode, stacked per entry ([To, ...]) as a predictor takes them. At the
    episode's start the first observation fills the window (Diffusion Policy's padding)."""

    def __init__(self, first: dict[str, np.ndarray], length: int) -> None:
        self._frames: deque[dict[str, np.ndarray]] = deque([first] * length, maxlen=length)

    def append(self, observation: dict[str, np.ndarray]) -> None:
        self._frames.append(observation)

    def stacked(self) -> dict[str, np.ndarray]:
        return {k: np.stack([frame[k] for frame in self._frames]) for k in self._frames[0]}


@dataclass
class EpisodeResult:
    seed: int
    score: float
    success: bool
    steps: int
    chunk_latency_s: list[float] = field(default_factory=list)
    held_steps: int = 0
    """Steps that found no action due and held the robot (only a loop with latency has them)."""


def chunk_seed(noise_seed: int, env_seed: int, step: int) -> int:
    """The sampling-noise seed of the chunk planned at ``step`` of episode ``env_seed``: episodes of one noise seed
    pair across methods and runs."""
    return (noise_seed * 1_000_003 + env_seed) * 1000 + step


EpisodeRunner = Callable[[ChunkPredictor, str, int, int, Path | None], EpisodeResult]
"""(predictor, task name, env seed, noise seed, GIF path or None) -> the episode's result."""


def rollout(predictor: ChunkPredictor, task_name: str, seed: int, noise_seed: int = 0,
            video_path: Path | None = None) -> EpisodeResult:
    """Run one episode of ``task_name`` from env seed ``seed``; optionally write a GIF of it.

    The predictor's sampling noise is seeded from (noise_seed, env seed, step), so an evaluation is
    reproducible and several noise seeds of the same env seeds measure the policy's own variance.
    """
    task = get_task(task_name)
    adapter = task.make_adapter()
    try:
        adapter.reset(seed)
        history = ObservationHistory(adapter.observation(), predictor.n_obs_steps)
        rewards, latencies, frames = [], [], []
        success, steps, done = False, 0, False
        while not done:
            obs = history.stacked()
            start = time.perf_counter()
            actions = predictor(obs, seed=chunk_seed(noise_seed, seed, steps))
            latencies.append(time.perf_counter() - start)
            for action in actions:
                result = adapter.step(action)
                steps += 1
                rewards.append(result.reward)
                success = success or result.success
                history.append(adapter.observation())
                if video_path is not None:
                    frames.append(adapter.render_frame())
                done = result.done
                if done:
                    break
        if video_path is not None:
            write_gif(video_path, frames, task.control_hz)
        return EpisodeResult(seed, task.episode_score(rewards), success, steps, latencies)
    finally:
        adapter.close()


def write_gif(path: Path, frames: list[np.ndarray], fps: float) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), duration=1000.0 / fps, loop=0)


_worker_predictor: ChunkPredictor | None = None
_worker_runner: EpisodeRunner = rollout


def _init_worker(factory: PredictorFactory, runner: EpisodeRunner) -> None:
    global _worker_predictor, _worker_runner  # one predictor per worker process, built once
    _worker_predictor, _worker_runner = factory(), runner


def _run_seed(args: tuple[str, int, int, Path | None]) -> EpisodeResult:
    task_name, seed, noise_seed, video = args
    assert _worker_predictor is not None
    return _worker_runner(_worker_predictor, task_name, seed, noise_seed, video)


def evaluate(factory: PredictorFactory, task_name: str, seeds: Iterable[int], workers: int = 2, noise_seed: int = 0,
             video_dir: Path | None = None, num_videos: int = 0, desc: str | None = None,
             runner: EpisodeRunner = rollout) -> list[EpisodeResult]:
    """Evaluate over ``seeds`` in ``workers`` processes (each builds its predictor once); ordered by seed.
    ``runner`` plays an episode: the lockstep :func:`rollout` (Diffusion Policy's protocol) unless another is given
    (:func:`sag_ros.nodes.replay.replay_episode` plays the deployed graph's timing); it must be picklable."""
    seeds = list(seeds)
    jobs = [(task_name, s, noise_seed,
             (video_dir / f"episode_{s}.gif") if video_dir is not None and i < num_videos else None)
            for i, s in enumerate(seeds)]
    results = []
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(factory, runner)) as pool:
        for result in tqdm(pool.imap_unordered(_run_seed, jobs), total=len(jobs), desc=desc or f"eval {task_name}",
                           dynamic_ncols=True):
            results.append(result)
        # Let the workers exit: the with-block's terminate() kills them before their finalizers run, and a lock
        # a worker made (tqdm's, in a spawned process) is then reported as a leaked semaphore at shutdown.
        pool.close()
        pool.join()
    return sorted(results, key=lambda r: r.seed)


def summarize(results: list[EpisodeResult]) -> dict[str, float]:
    """Score, success rate and per-chunk latency statistics over episodes."""
    latencies = np.array([l for r in results for l in r.chunk_latency_s])
    return {
        "episodes": len(results),
        "score": float(np.mean([r.score for r in results])),
        "success_rate": float(np.mean([r.success for r in results])),
        "mean_steps": float(np.mean([r.steps for r in results])),
        "latency_mean_ms": float(latencies.mean() * 1e3),
        "latency_p95_ms": float(np.percentile(latencies, 95) * 1e3),
    }
