"""Expert demonstration generation.

Episode ``i`` uses env seed ``seed + i``; every episode builds its own adapter and expert, so
its content depends only on its seed (not on which worker ran it or what ran before), and
results are gathered in seed order: the same arguments give the same file for any worker count.
Only successful episodes are kept; the file records how many were attempted.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sag_ros.sim.dataset import Demos, load_demos, save_demos
from sag_ros.sim.task import TaskSpec, get_task

GENERATOR_VERSION = 1


def run_expert_episode(task: TaskSpec, seed: int) -> dict[str, np.ndarray | bool | int]:
    """Roll out the task's expert on one seed, recording the pre-action state of every step."""
    adapter = task.make_adapter()
    expert = task.make_expert()
    records: dict[str, list[np.ndarray]] = {"sim_state": [], "action": [], "state": [], "keypoints": []}
    try:
        adapter.reset(seed)
        expert.reset(adapter)
        success = False
        for _ in range(task.max_steps):
            obs = adapter.observation()
            action = np.asarray(expert.act(adapter), dtype=np.float32)
            records["sim_state"].append(adapter.sim_state())
            records["state"].append(obs["state"])
            records["keypoints"].append(obs["keypoints"])
            records["action"].append(action)
            result = adapter.step(action)
            if result.done:
                success = result.success
                break
    finally:
        adapter.close()
    arrays = {key: np.stack(values) for key, values in records.items()}
    return {**arrays, "success": success, "seed": seed}


def _episode_job(job: tuple[str, int]) -> dict[str, np.ndarray | bool | int]:
    """Worker entry point: rebuilds the task by name, since a TaskSpec holds closures."""
    task_name, seed = job
    return run_expert_episode(get_task(task_name), seed)


def generate_demos(task: TaskSpec, num_episodes: int, seed: int, out_path: Path, workers: int) -> Path:
    """Run the expert on seeds ``seed .. seed + num_episodes - 1`` and save the successful episodes."""
    if seed < 0 or seed + num_episodes > task.test_seed_start:
        raise ValueError(
            f"demo seeds [{seed}, {seed + num_episodes}) must stay below the test seeds (>= {task.test_seed_start})"
        )
    jobs = [(task.name, seed + i) for i in range(num_episodes)]
    bar = tqdm(total=num_episodes, desc=f"demos {task.name}", unit="ep")
    episodes = []
    try:
        if workers <= 1:
            for job in jobs:
                episodes.append(_episode_job(job))
                bar.update()
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for episode in pool.imap(_episode_job, jobs):
                    episodes.append(episode)
                    bar.update()
    finally:
        bar.close()
    kept = [ep for ep in episodes if ep["success"]]
    if not kept:
        raise RuntimeError(f"the expert solved none of {num_episodes} episodes; nothing to save")
    keys = ("sim_state", "action", "state", "keypoints")
    demos = Demos(
        **{key: np.concatenate([ep[key] for ep in kept]) for key in keys},
        episode_ends=np.cumsum([len(ep["action"]) for ep in kept]).astype(np.int64),
        metadata={
            "task": task.name,
            "seed": seed,
            "episode_seeds": [int(ep["seed"]) for ep in kept],
            "attempted": num_episodes,
            "kept": len(kept),
            "generator_version": GENERATOR_VERSION,
        },
    )
    return save_demos(demos, out_path)


def datagen_main(task_name: str, num_episodes: int, seed: int, out: Path, workers: int) -> None:
    """CLI entry: generate demos and print a one-line summary."""
    start = time.perf_counter()
    path = generate_demos(get_task(task_name), num_episodes, seed, Path(out), workers)
    meta = load_demos(path).metadata
    size_mb = path.stat().st_size / 1e6
    print(
        f"{task_name}: kept {meta['kept']}/{meta['attempted']} episodes -> {path} "
        f"({size_mb:.2f} MB) in {time.perf_counter() - start:.1f} s"
    )
