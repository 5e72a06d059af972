"""Fixtures for node tests: real rclpy, real DDS on loopback, one Context per test, one domain per run.

Import with ``from ros_fixtures import *`` after ``pytest.importorskip("rclpy", ...)``.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from sag_ros.nodes.bringup import graph_executor

# One DDS domain per test run (so parallel runs never see each other), discovery kept on loopback.
DOMAIN_ID = 10 + os.getpid() % 90


@pytest.fixture(scope="session", autouse=True)
def ros_environment():
    saved = {k: os.environ.get(k) for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def ros_context():
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def executor(ros_context):
    ex = graph_executor(ros_context)
    yield ex
    ex.shutdown()


def stop_nodes(executor, *nodes) -> None:
    """Stop the executor, then destroy ``nodes``: the order of ``stop_graph``, which a test does not call because it
    logs and swallows an error destroying a node, where a test must fail on one."""
    executor.shutdown()
    for node in nodes:
        node.destroy_node()


def spin_until(executor, predicate, timeout_s: float) -> bool:
    """Spin until ``predicate()`` holds or the deadline passes; returns the predicate's last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=0.02)
    return bool(predicate())


def spin_for(executor, seconds: float) -> None:
    spin_until(executor, lambda: False, seconds)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny image policy (32 px, To=2, Ta=4) with Push-T ranges, saved with ``save_policy``."""
    from conftest import tiny_config
    from sag_ros.policy.checkpoint import save_policy
    from sag_ros.policy.policy import DiffusionPolicy

    torch.manual_seed(0)
    policy = DiffusionPolicy(tiny_config()).eval()
    corners = np.array([[0.0, 0.0], [512.0, 512.0]])
    policy.normalizer.fit({"action": corners, "state": corners})
    path = tmp_path_factory.mktemp("policy") / "tiny.pt"
    save_policy(policy, path, data_hash="test")
    return path
