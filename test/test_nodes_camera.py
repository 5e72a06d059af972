"""The camera node over real DDS: resize to the policy input, pair with state, drop bad frames."""

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy absent: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from ros_fixtures import *  # noqa: E402,F401,F403
from ros_fixtures import spin_until, stop_nodes  # noqa: E402
from sag_ros.nodes.camera_node import CameraNode, ObservationBuffer, sensor_qos_depth1  # noqa: E402
from sag_ros.nodes.convert import array_to_image, array_to_joint_state, image_to_array, stamp_to_ns  # noqa: E402


def test_buffer_pads_a_short_history_and_restarts_on_a_backwards_stamp():
    buffer = ObservationBuffer(3, 4, 2)
    assert buffer.latest() is None
    buffer.push(10, np.full((4, 4, 3), 1, np.uint8), np.array([1.0, 1.0], np.float32))
    buffer.push(20, np.full((4, 4, 3), 2, np.uint8), np.array([2.0, 2.0], np.float32))
    stamp, obs = buffer.latest()
    assert stamp == 20 and obs["image"][:, 0, 0, 0].tolist() == [1, 1, 2] and obs["state"][:, 0].tolist() == [1, 1, 2]
    buffer.push(5, np.full((4, 4, 3), 3, np.uint8), np.array([3.0, 3.0], np.float32))  # source restarted
    assert buffer.latest()[1]["image"][:, 0, 0, 0].tolist() == [3, 3, 3]
    with pytest.raises(ValueError, match="image shape"):
        buffer.push(30, np.zeros((5, 5, 3), np.uint8), np.zeros(2, np.float32))


def _camera_with_inputs(ctx, executor, buffer: ObservationBuffer, **params):
    """A camera node writing into ``buffer``, and a probe node publishing its image and state inputs, connected."""
    camera = CameraNode(buffer, context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    probe = Node("probe", context=ctx)
    image_pub = probe.create_publisher(Image, "image_raw", sensor_qos_depth1())
    state_pub = probe.create_publisher(JointState, "joint_states", 10)
    for node in (camera, probe):
        executor.add_node(node)
    spin_until(executor, lambda: image_pub.get_subscription_count() > 0 and state_pub.get_subscription_count() > 0, 3.0)
    return camera, probe, image_pub, state_pub


def test_camera_resizes_pairs_and_drops_bad_frames(ros_context, executor):
    buffer = ObservationBuffer(2, 32, 2)
    camera, probe, image_pub, state_pub = _camera_with_inputs(ros_context, executor, buffer, image_size=32)
    received = []
    probe.create_subscription(Image, "/sag/observation/image", received.append, 10)
    try:
        stamp = probe.get_clock().now().to_msg()
        # no state yet, then a bad encoding: both dropped with a warning
        image_pub.publish(array_to_image(np.zeros((96, 96, 3), np.uint8), stamp))
        assert spin_until(executor, lambda: camera.frames_dropped == 1, 3.0)
        state_pub.publish(array_to_joint_state(np.array([10.0, 20.0]), stamp, ["x", "y"]))
        assert spin_until(executor, lambda: camera._state is not None, 3.0)
        image_pub.publish(Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8), header=stamp_header(stamp)))
        assert spin_until(executor, lambda: camera.frames_dropped == 2, 3.0)
        assert buffer.latest() is None
        frame = np.zeros((96, 128, 3), np.uint8)
        frame[:, 16:112] = (200, 100, 50)
        image_pub.publish(array_to_image(frame, stamp))
        assert spin_until(executor, lambda: received, 3.0)
        out = image_to_array(received[0])
        assert out.shape == (32, 32, 3) and (out == (200, 100, 50)).all()
        assert stamp_to_ns(received[0].header.stamp) == stamp_to_ns(stamp)
        latest_stamp, obs = buffer.latest()
        assert latest_stamp == stamp_to_ns(stamp) and obs["state"].tolist() == [[10.0, 20.0]] * 2
        image_pub.publish(array_to_image(frame, stamp))  # the same stamp again: not a new observation
        assert spin_until(executor, lambda: camera.frames_dropped == 3, 3.0)
        assert camera.frames_out == 1 and len(received) == 1
    finally:
        stop_nodes(executor, camera, probe)


def test_camera_reads_the_named_joints_of_a_robots_joint_states(ros_context, executor):
    buffer = ObservationBuffer(2, 32, 2)
    camera, probe, image_pub, state_pub = _camera_with_inputs(ros_context, executor, buffer, image_size=32,
                                                              state_joints=["x", "y"])
    states = []
    probe.create_subscription(JointState, "/sag/observation/state", states.append, 10)
    try:
        stamp = probe.get_clock().now().to_msg()
        state_pub.publish(JointState(header=stamp_header(stamp), name=["gripper", "y", "x"], position=[0.5, 20.0, 10.0]))
        assert spin_until(executor, lambda: camera._state is not None, 3.0)
        image_pub.publish(array_to_image(np.zeros((32, 32, 3), np.uint8), stamp))
        assert spin_until(executor, lambda: states, 3.0)
        assert list(states[0].name) == ["x", "y"] and list(states[0].position) == [10.0, 20.0]
        assert buffer.latest()[1]["state"][-1].tolist() == [10.0, 20.0]
    finally:
        stop_nodes(executor, camera, probe)


def test_state_joints_must_name_state_dim_joints():
    from sag_ros.nodes.params import CameraNodeConfig

    with pytest.raises(ValueError, match=r"state_joints=\['x'\] must name state_dim=2 joints"):
        CameraNodeConfig(state_joints=["x"])


def stamp_header(stamp):
    from std_msgs.msg import Header

    return Header(stamp=stamp)
