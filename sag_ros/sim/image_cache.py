"""Rendered demonstration images, kept beside the demonstration file.

Demo files hold simulator states only, and every training command re-renders the images from them, bit for bit
(:meth:`Demos.render_images`): 48 s for Push-T's 200 episodes on the 2-core CPU, minutes for Meta-World. The first
render is kept in ``<demos>.images.npz`` (Push-T's 200 episodes: 11 MB), tied to the demo file's hash, the task and
the image size, and read back by every later command. A cache that does not match, or cannot be read, is rendered
afresh and replaced. With both files a machine that has no simulator installed (a lent GPU) can train.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from sag_ros.atomic import atomic_write
from sag_ros.sim.dataset import Demos
from sag_ros.sim.task import TaskSpec

CACHE_FORMAT = 1


def image_cache_path(data_path: Path) -> Path:
    """``data/pusht_expert_200.npz`` -> ``data/pusht_expert_200.images.npz``."""
    data_path = Path(data_path)
    return data_path.with_name(f"{data_path.stem}.images.npz")


def demo_images(demos: Demos, task: TaskSpec, data_path: Path, data_hash: str) -> np.ndarray:
    """The uint8 [N, H, W, 3] images of ``demos`` (loaded from ``data_path`` whose hash is ``data_hash``): from
    the cache when it was made from the same file for the same task and size, else rendered (and cached)."""
    path = image_cache_path(data_path)
    key = {"format": CACHE_FORMAT, "data_hash": data_hash, "task": task.name, "image_size": task.image_size,
           "num_steps": demos.num_steps}
    if path.exists():
        images, why_not = _read(path, key)
        if images is not None:
            return images
        print(f"{path}: {why_not}; rendering the images again")
    images = demos.render_images(task)
    try:
        with atomic_write(path) as f:
            np.savez_compressed(f, images=images, key=np.array(json.dumps(key, sort_keys=True)))
    except OSError as exc:
        print(f"{path}: could not keep the rendered images ({exc}); the next command renders them again")
    return images


def _read(path: Path, key: dict) -> tuple[np.ndarray | None, str]:
    """(images, "") when ``path`` holds images made under ``key``, else (None, why not)."""
    try:
        with np.load(path, allow_pickle=False) as cache:
            stored = json.loads(str(cache["key"]))
            if stored != key:
                changed = sorted(name for name in key if stored.get(name) != key[name])
                return None, f"made for other {', '.join(changed)}"
            images = cache["images"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        return None, f"unreadable ({type(exc).__name__})"
    size = key["image_size"]
    if images.dtype != np.uint8 or images.shape != (key["num_steps"], size, size, 3):
        return None, f"holds {images.dtype} {images.shape}"
    return images, ""
