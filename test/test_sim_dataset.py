"""Demo generation/loading: determinism, atomic files, clear errors."""

import json
import zipfile

import numpy as np
import pytest

from sag_ros.sim.datagen import generate_demos
from sag_ros.sim.dataset import load_demos, save_demos
from sag_ros.sim.task import get_task


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """The same two fast episodes (seeds 7, 8) generated inline and with 2 spawned workers."""
    task = get_task("pusht")
    root = tmp_path_factory.mktemp("demos")
    return (
        generate_demos(task, 2, 7, root / "inline.npz", workers=1),
        generate_demos(task, 2, 7, root / "pool.npz", workers=2),
    )


def test_generation_is_deterministic_across_worker_counts(demo_files):
    inline, pool = demo_files
    assert inline.read_bytes() == pool.read_bytes()


def test_loaded_demos_are_consistent(demo_files):
    task = get_task("pusht")
    demos = load_demos(demo_files[0])
    n = demos.num_steps
    assert demos.sim_state.shape == (n, 5) and demos.sim_state.dtype == np.float64
    assert demos.action.shape == (n, task.action_dim) and demos.action.dtype == np.float32
    assert demos.state.shape == (n, task.state_dim) and demos.keypoints.shape == (n, task.keypoint_dim)
    assert demos.metadata["task"] == "pusht" and demos.metadata["episode_seeds"] == [7, 8]
    assert demos.metadata["attempted"] == 2 and demos.metadata["kept"] == 2
    slices = demos.episode_slices()
    assert len(slices) == 2 and slices[0].start == 0 and slices[-1].stop == n
    np.testing.assert_array_equal(demos.state, demos.sim_state[:, :2].astype(np.float32))
    images = demos.render_images(task)
    assert images.shape == (n, task.image_size, task.image_size, 3) and images.dtype == np.uint8


def test_truncated_file_fails_to_load_clearly(demo_files, tmp_path):
    data = demo_files[0].read_bytes()
    broken = tmp_path / "broken.npz"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_demos(broken)


def test_missing_key_and_wrong_version_are_rejected(demo_files, tmp_path):
    demos = load_demos(demo_files[0])
    with np.load(demo_files[0]) as npz:
        arrays = dict(npz)
    partial = tmp_path / "partial.npz"
    np.savez_compressed(partial, **{k: v for k, v in arrays.items() if k != "action"})
    with pytest.raises(ValueError, match="action"):
        load_demos(partial)
    old = tmp_path / "old.npz"
    meta = json.loads(str(arrays["metadata"]))
    meta["format_version"] = 0
    np.savez_compressed(old, **{**arrays, "metadata": np.array(json.dumps(meta))})
    with pytest.raises(ValueError, match="version"):
        load_demos(old)
    saved = save_demos(demos, tmp_path / "copy.npz")
    assert zipfile.is_zipfile(saved) and not list(tmp_path.glob(".*.tmp"))


def test_demo_seeds_must_not_reach_test_seeds(tmp_path):
    task = get_task("pusht")
    with pytest.raises(ValueError, match="test seeds"):
        generate_demos(task, 2, task.test_seed_start - 1, tmp_path / "x.npz", workers=1)
