"""Training windows over flat demonstration arrays: To observation steps and a Tp-step action chunk.

A window starts up to To - 1 steps before an episode's first step and may end up to Ta - 1 steps past
its last; out-of-episode steps repeat the episode's first/last entry (Diffusion Policy's padding), so the
policy learns to start from rest and to hold still at the end. Windows never cross episodes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch


def window_starts(episode_ends: np.ndarray, horizon: int, pad_before: int, pad_after: int) -> np.ndarray:
    """Every valid window as rows (episode_start, episode_end, window_start); window_start may be < episode_start."""
    rows = []
    start = 0
    for end in np.asarray(episode_ends, dtype=np.int64):
        first, last = start - pad_before, end - horizon + pad_after
        for t0 in range(first, last + 1):
            rows.append((start, end, t0))
        start = int(end)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def window_time_indices(rows: np.ndarray, horizon: int) -> np.ndarray:
    """Flat buffer index of every step of each window [M, horizon], edge-padded inside the episode."""
    t = rows[:, 2:3] + np.arange(horizon)[None, :]
    return np.clip(t, rows[:, 0:1], rows[:, 1:2] - 1)


@dataclass
class WindowSampler:
    """Draws random training batches of (raw observation dict, raw action chunk) from flat arrays.

    ``arrays`` holds per-step data: ``action`` [N, A] and the observation entries the policy reads
    (``image`` uint8 [N, H, W, 3], ``state`` [N, S], ``keypoints`` [N, K]).
    """

    arrays: Mapping[str, np.ndarray]
    episode_ends: np.ndarray
    n_obs_steps: int
    horizon: int
    n_action_steps: int
    data_hash: str

    def __post_init__(self) -> None:
        self.rows = window_starts(self.episode_ends, self.horizon, self.n_obs_steps - 1, self.n_action_steps - 1)
        if len(self.rows) == 0:
            raise ValueError("no training window fits in the demonstrations (episodes shorter than the horizon?)")

    def normalizer_data(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self.arrays.items() if k != "image"}

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pick = torch.randint(0, len(self.rows), (batch_size,), generator=generator).numpy()
        idx = window_time_indices(self.rows[pick], self.horizon)
        obs_idx = idx[:, : self.n_obs_steps]
        obs = {k: torch.from_numpy(v[obs_idx]) for k, v in self.arrays.items() if k != "action"}
        return obs, torch.from_numpy(self.arrays["action"][idx]).float()


def hash_file(path: str | Path) -> str:
    """Short SHA-256 of a file's bytes: the data identity stored in checkpoints."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
