"""Rendered demo images cached beside the demo file: written once, read back without a renderer, re-rendered when
made from other data or unreadable; training windows load from it where no simulator is installed."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sag_ros.policy.data import hash_file
from sag_ros.sim.datagen import generate_demos
from sag_ros.sim.dataset import load_demos
from sag_ros.sim.image_cache import demo_images, image_cache_path
from sag_ros.sim.task import get_task

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    return generate_demos(get_task("pusht"), 1, 7, tmp_path_factory.mktemp("demos") / "demos.npz", workers=1)


def _no_renderer(task):
    def refuse():
        raise AssertionError("the renderer ran although the cache matched")
    return dataclasses.replace(task, make_adapter=refuse)


def test_images_are_rendered_once_then_read_back(demo_file, tmp_path):
    data = tmp_path / "demos.npz"
    data.write_bytes(demo_file.read_bytes())
    task, demos, data_hash = get_task("pusht"), load_demos(data), hash_file(data)
    rendered = demo_images(demos, task, data, data_hash)
    assert image_cache_path(data) == tmp_path / "demos.images.npz" and image_cache_path(data).is_file()
    np.testing.assert_array_equal(rendered, demos.render_images(task))
    np.testing.assert_array_equal(demo_images(demos, _no_renderer(task), data, data_hash), rendered)


def test_a_cache_made_from_other_data_or_unreadable_is_rendered_again(demo_file, tmp_path, capsys):
    data = tmp_path / "demos.npz"
    data.write_bytes(demo_file.read_bytes())
    task, demos = get_task("pusht"), load_demos(data)
    rendered = demo_images(demos, task, data, "hash-a")
    with pytest.raises(AssertionError, match="the renderer ran"):
        demo_images(demos, _no_renderer(task), data, "hash-b")
    assert "made for other data_hash; rendering the images again" in capsys.readouterr().out
    np.testing.assert_array_equal(demo_images(demos, task, data, "hash-b"), rendered)  # and replaced
    demo_images(demos, _no_renderer(task), data, "hash-b")
    image_cache_path(data).write_bytes(b"not a zip file")
    np.testing.assert_array_equal(demo_images(demos, task, data, "hash-b"), rendered)
    assert "demos.images.npz: unreadable (" in capsys.readouterr().out


def test_training_windows_load_from_the_cache_where_no_simulator_is_installed(demo_file, tmp_path):
    """What a lent GPU machine has: torch, numpy, yaml, tqdm; no gymnasium, pymunk, pygame, MuJoCo or ROS."""
    data = tmp_path / "demos.npz"
    data.write_bytes(demo_file.read_bytes())
    demo_images(load_demos(data), get_task("pusht"), data, hash_file(data))
    script = f"""
import sys
for name in ("gymnasium", "gym_pusht", "pymunk", "pygame", "mujoco", "metaworld", "cv2", "shapely", "rclpy"):
    sys.modules[name] = None  # any import of them now fails
from pathlib import Path
from sag_ros.cli import training_sampler
from sag_ros.config import load_experiment
sampler = training_sampler(load_experiment(Path("config/pusht_image.yaml")).policy, Path({str(data)!r}))
print("windows", sampler.arrays["image"].shape)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "windows (" in done.stdout
