"""Demonstration file format and loader.

A demo file is one ``.npz`` holding per-step ``sim_state``/``action``/``state``/``keypoints``,
``episode_ends`` and a JSON metadata string. Images are not stored: they are re-rendered
bit-for-bit from ``sim_state`` (200 Push-T episodes stay well under a few MB), and the training
commands keep the render beside the file (:mod:`sag_ros.sim.image_cache`). Files are
written atomically and byte-reproducibly (fixed zip timestamps), so the same generator
arguments give the same file and an interrupted write never leaves a loadable file.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sag_ros.atomic import atomic_write
from sag_ros.sim.task import TaskSpec

FORMAT_VERSION = 1
ARRAY_KEYS = ("sim_state", "action", "state", "keypoints", "episode_ends")
_DTYPES = {
    "sim_state": np.float64,
    "action": np.float32,
    "state": np.float32,
    "keypoints": np.float32,
    "episode_ends": np.int64,
}
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class Demos:
    """All steps of all kept episodes, concatenated; ``episode_ends`` are exclusive end indices."""

    sim_state: np.ndarray
    action: np.ndarray
    state: np.ndarray
    keypoints: np.ndarray
    episode_ends: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.sim_state.shape[0])

    def episode_slices(self) -> list[slice]:
        """One slice per episode into the step arrays."""
        starts = np.concatenate([[0], self.episode_ends[:-1]])
        return [slice(int(a), int(b)) for a, b in zip(starts, self.episode_ends)]

    def render_images(self, task: TaskSpec) -> np.ndarray:
        """uint8 [N, H, W, 3] observation images re-rendered from ``sim_state``."""
        adapter = task.make_adapter()
        try:
            adapter.reset(0)  # any seed: render_state only needs a built scene
            images = np.empty((self.num_steps, task.image_size, task.image_size, 3), dtype=np.uint8)
            for i in tqdm(range(self.num_steps), desc="render", unit="frame", leave=False):
                images[i] = adapter.render_state(self.sim_state[i])["image"]
            return images
        finally:
            adapter.close()


def save_demos(demos: Demos, path: Path) -> Path:
    """Write ``demos`` atomically (temp file in the same dir, fsync, rename); returns ``path``."""
    path = Path(path)
    arrays = {key: np.ascontiguousarray(getattr(demos, key), dtype=_DTYPES[key]) for key in ARRAY_KEYS}
    arrays["metadata"] = np.array(json.dumps({**demos.metadata, "format_version": FORMAT_VERSION}, sort_keys=True))
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, array in arrays.items():
            # Same layout as np.savez_compressed, but with fixed timestamps for reproducible bytes.
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return path


def load_demos(path: Path) -> Demos:
    """Load a demo file; raises ``ValueError`` on a corrupt file, a missing key or a wrong version."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in (*ARRAY_KEYS, "metadata") if key not in npz.files]
            if missing:
                raise ValueError(f"{path}: not a demo file, missing keys {missing}")
            data = {key: npz[key] for key in (*ARRAY_KEYS, "metadata")}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path}: unreadable demo file (truncated or corrupt): {exc}") from exc
    metadata = json.loads(str(data.pop("metadata")))
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: demo format version {version}, expected {FORMAT_VERSION}; regenerate it")
    demos = Demos(**data, metadata=metadata)
    if demos.episode_ends.size and int(demos.episode_ends[-1]) != demos.num_steps:
        raise ValueError(f"{path}: episode_ends[-1]={demos.episode_ends[-1]} != {demos.num_steps} steps")
    return demos
