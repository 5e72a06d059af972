"""Dashboard over real DDS: the mask message round-trips, the inference node publishes ``/sag/mask`` only while
subscribed, a live inference node fills the dashboard model (samples, mask, diagnostics) and its widget, and two
robots' graphs in their own namespaces stay apart."""

import os

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy absent: pip install -e .[ros]")
pytestmark = pytest.mark.ros
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import: no display needed

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from std_msgs.msg import Float64, UInt8MultiArray  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

import sag_ros.nodes.inference_node as inference_node  # noqa: E402
from ros_fixtures import *  # noqa: E402,F401,F403
from ros_fixtures import spin_for, spin_until, stop_nodes  # noqa: E402
from sag_ros.dashboard.model import DashboardModel  # noqa: E402
from sag_ros.dashboard.source import DashboardSource  # noqa: E402
from sag_ros.nodes.camera_node import ObservationBuffer  # noqa: E402
from sag_ros.nodes.convert import mask_to_msg, msg_to_mask  # noqa: E402
from sag_ros.nodes.inference_node import InferenceNode  # noqa: E402
from sag_ros.policy.checkpoint import load_policy  # noqa: E402
from sag_ros.policy.sampling import eager_kernels  # noqa: E402
from sag_ros.predictor import PolicyPredictor  # noqa: E402
from sag_ros.sparse.planner import SagPlanner  # noqa: E402
from sag_ros.sparse.pruner import Pruner  # noqa: E402
from sag_ros.sparse.train_pruner import PrunerTrainConfig, pruner_config_for  # noqa: E402

SIZE = 32  # tiny_config's image size
STEPS, BLOCKS = 10, 6  # tiny_config: 10 denoising steps, 2 layers x (SA, CA, FFN)


def sag_predictor(path) -> PolicyPredictor:
    """The tiny policy with an untrained pruner: observation-dependent masks, about half the cells pruned."""
    policy, _ = load_policy(path)
    kernels = eager_kernels(policy.denoiser)
    pruner = Pruner(pruner_config_for(policy, PrunerTrainConfig()))
    return PolicyPredictor(policy, SagPlanner(kernels, pruner, "one_for_all"), kernels)


def start_inference(ctx, path, probe: Node, namespace: str = "/", **params) -> InferenceNode:
    """An inference node on a shared buffer that ``probe`` keeps fresh (stamped now, every 50 ms)."""
    buffer = ObservationBuffer(2, SIZE, 2)
    overrides = [Parameter(k, value=v) for k, v in dict(model_path=str(path), control_rate_hz=10.0, **params).items()]
    node = InferenceNode(buffer, sag_predictor(path), context=ctx, parameter_overrides=overrides,
                         cli_args=["--ros-args", "-r", f"__ns:={namespace}"])
    rgb = np.full((SIZE, SIZE, 3), 120, np.uint8)
    probe.create_timer(0.05, lambda: buffer.push(probe.get_clock().now().nanoseconds, rgb,
                                                  np.array([200.0, 300.0], np.float32)))
    return node


@pytest.mark.parametrize("shape", [(STEPS, BLOCKS), (1, 1), (3, 5), (100, 24)])
def test_mask_message_round_trips(shape):
    mask = np.random.default_rng(sum(shape)).random(shape) < 0.5
    msg = mask_to_msg(mask)
    assert len(msg.data) == -(-mask.size // 8)  # 8 cells a byte
    assert [(d.label, d.size) for d in msg.layout.dim] == [("steps", shape[0]), ("blocks", shape[1])]
    np.testing.assert_array_equal(msg_to_mask(msg), mask)
    msg.layout.dim[1].size += 8
    with pytest.raises(ValueError, match="bytes"):
        msg_to_mask(msg)


def test_mask_is_published_only_with_a_subscriber(ros_context, executor, tiny_checkpoint, monkeypatch):
    packed = []
    monkeypatch.setattr(inference_node, "mask_to_msg",
                        lambda mask: packed.append(mask.shape) or mask_to_msg(mask))
    probe = Node("probe", context=ros_context)
    inference = start_inference(ros_context, tiny_checkpoint, probe)
    fractions, masks = [], []
    probe.create_subscription(Float64, "/sag/executed_fraction", lambda m: fractions.append(m.data), 10)
    for node in (inference, probe):
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: inference.chunks >= 3, 5.0), inference.health()
        assert packed == [], "packed a mask with nobody subscribed"
        probe.create_subscription(UInt8MultiArray, "/sag/mask", lambda m: masks.append(msg_to_mask(m)), 10)
        assert spin_until(executor, lambda: len(masks) >= 3, 5.0), f"{len(masks)} masks, {inference.chunks} chunks"
        for mask in masks:
            assert mask.shape == (STEPS, BLOCKS) and not mask[0].any()  # the first step always computes
            assert 0 < mask.sum() < mask.size
            assert min(abs(f - (1.0 - mask.mean())) for f in fractions) < 1e-6  # the chunk's executed fraction
    finally:
        stop_nodes(executor, inference, probe)


def test_live_inference_node_fills_the_dashboard(ros_context, executor, tiny_checkpoint):
    QtWidgets = pytest.importorskip("qtpy.QtWidgets", reason="no Qt binding: pip install -e .[dashboard]")
    pytest.importorskip("pyqtgraph", reason="pyqtgraph absent: pip install -e .[dashboard]")
    from sag_ros.dashboard.widget import DashboardWidget

    probe = Node("probe", context=ros_context)
    inference = start_inference(ros_context, tiny_checkpoint, probe, diagnostics_period_s=0.25)
    dashboard = Node("sag_dashboard", context=ros_context)
    model = DashboardModel(window=50)
    source = DashboardSource(model, dashboard)
    for node in (inference, probe, dashboard):
        executor.add_node(node)
    try:
        ready = lambda: (min(model.count(s) for s in ("total_ms", "plan_ms", "denoise_ms", "obs_age_ms",  # noqa: E731
                                                      "executed_fraction")) >= 3
                         and model.mask is not None and model.statuses())
        assert spin_until(executor, ready, 8.0), (model.count("total_ms"), model.mask, model.statuses())
        _, total = model.series("total_ms")
        _, denoise = model.series("denoise_ms")
        assert (total > 0).all() and total.max() < 1000 and (denoise > 0).all()
        assert model.mask.shape == (STEPS, BLOCKS)
        status = model.statuses()[0]
        assert status.name == "/sag_inference: inference loop" and status.level_name in ("OK", "WARN")
        assert model.period_ms == pytest.approx(100.0)  # from the node's diagnostics
        assert model.rates()[1] == pytest.approx(10.0)

        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        widget = DashboardWidget(model, refresh_ms=0)
        app.processEvents()
        assert "/sag_inference: inference loop" in widget.status_label.text()
        assert status.level_name in widget.status_label.text()
        assert f"last {model.summary().count} chunks" in widget.stats_label.text()
        widget.close()
    finally:
        source.destroy()
        stop_nodes(executor, inference, probe, dashboard)


def test_two_robots_in_their_own_namespaces_stay_apart(ros_context, executor, tiny_checkpoint):
    """Relative topic names: each namespaced inference node publishes under its namespace, nothing lands on the root
    /sag/actions, and a dashboard in /robot1 shows robot1's samples and status only (both share /diagnostics)."""
    probe = Node("probe", context=ros_context)
    robots = {ns: start_inference(ros_context, tiny_checkpoint, probe, namespace=ns, diagnostics_period_s=0.25)
              for ns in ("/robot1", "/robot2")}
    dashboard = Node("sag_dashboard", namespace="/robot1", context=ros_context)
    model = DashboardModel(window=10_000)
    source = DashboardSource(model, dashboard)
    chunks = {topic: [] for topic in ("/robot1/sag/actions", "/robot2/sag/actions", "/sag/actions")}
    for topic, received in chunks.items():
        probe.create_subscription(JointTrajectory, topic, received.append, 10)
    for node in (*robots.values(), probe, dashboard):
        executor.add_node(node)
    try:
        ready = lambda: (min(len(chunks["/robot1/sag/actions"]), len(chunks["/robot2/sag/actions"]),  # noqa: E731
                             model.count("total_ms")) >= 3 and model.statuses())
        assert spin_until(executor, ready, 8.0), ({t: len(c) for t, c in chunks.items()}, model.statuses())
        spin_for(executor, 0.6)  # robot2's diagnostics (every 0.25 s) reach the dashboard's /diagnostics too
        assert chunks["/sag/actions"] == []
        assert [robot.get_fully_qualified_name() for robot in robots.values()] == [
            "/robot1/sag_inference", "/robot2/sag_inference"]
        assert [status.name for status in model.statuses()] == ["/robot1/sag_inference: inference loop"]
        assert model.count("total_ms") <= robots["/robot1"].chunks  # robot2's samples would double it
    finally:
        source.destroy()
        stop_nodes(executor, *robots.values(), probe, dashboard)


def test_dashboard_pauses_and_resumes_the_inference_node(ros_context, executor, tiny_checkpoint):
    """request_enable over the real service: False pauses the chunks (diagnostics WARN), True resumes them; in a
    namespace without an inference node there is nothing to ask."""
    probe = Node("probe", context=ros_context)
    inference = start_inference(ros_context, tiny_checkpoint, probe)
    dashboard = Node("sag_dashboard", context=ros_context)
    elsewhere = Node("sag_dashboard", namespace="/robot9", context=ros_context)
    source, lonely = DashboardSource(DashboardModel(), dashboard), DashboardSource(DashboardModel(), elsewhere)
    for node in (inference, probe, dashboard, elsewhere):
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: inference.chunks >= 2 and source._enable_client.service_is_ready(), 5.0)
        assert source.request_enable(False)
        assert spin_until(executor, lambda: inference.health()[0].name == "WARN", 2.0), inference.health()
        spin_for(executor, 0.5)  # a chunk computed before the call may still be counted
        paused_at = inference.chunks
        spin_for(executor, 1.0)
        assert inference.chunks == paused_at and "paused" in inference.health()[1]
        assert source.request_enable(True)
        assert spin_until(executor, lambda: inference.chunks >= paused_at + 3, 5.0), inference.health()
        assert not lonely.request_enable(False)
    finally:
        source.destroy()
        lonely.destroy()
        stop_nodes(executor, inference, probe, dashboard, elsewhere)
