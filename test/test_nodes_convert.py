"""Message <-> array conversions (sag_ros.nodes.convert): needs the ROS message packages, not a DDS graph."""

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 messages absent: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from sensor_msgs.msg import Image, JointState  # noqa: E402

from sag_ros.nodes.convert import (array_to_image, array_to_joint_state, chunk_to_trajectory, fit_square,  # noqa: E402
                                   image_to_array, joint_state_to_array, ns_to_stamp, stamp_to_ns,
                                   trajectory_to_chunk)


def _image(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    padded = np.concatenate([rows, np.full((h, pad), 7, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, step=padded.shape[1], data=padded.tobytes())


def test_rgb8_round_trip_and_stamp():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = array_to_image(rgb, ns_to_stamp(1_500_000_123), "cam")
    assert (msg.encoding, msg.step, msg.header.frame_id) == ("rgb8", 21, "cam")
    assert stamp_to_ns(msg.header.stamp) == 1_500_000_123
    np.testing.assert_array_equal(image_to_array(msg), rgb)


@pytest.mark.parametrize("pad", [0, 3])
def test_bgr8_rgba8_bgra8_and_mono8_honour_step(pad):
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_array(_image(rgb[:, :, ::-1].copy(), "bgr8", pad)), rgb)
    alpha = np.random.default_rng(2).integers(0, 256, (4, 6, 1), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_array(_image(np.concatenate((rgb, alpha), 2), "rgba8", pad)), rgb)
    bgra = np.concatenate((rgb[:, :, ::-1], alpha), 2)
    np.testing.assert_array_equal(image_to_array(_image(bgra, "bgra8", pad)), rgb)
    mono = rgb[:, :, 0].copy()
    out = image_to_array(_image(mono[:, :, None], "mono8", pad))
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], mono)


def test_bad_encodings_and_sizes_are_refused():
    rgb = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(ValueError, match="encoding '16UC1'"):
        image_to_array(Image(height=4, width=6, encoding="16UC1", step=12, data=bytes(48)))
    with pytest.raises(ValueError, match="bytes"):
        bad = _image(rgb, "rgb8")
        bad.data = bytes(len(bad.data) - 1)
        image_to_array(bad)
    with pytest.raises(ValueError, match="step"):
        image_to_array(Image(height=4, width=6, encoding="rgb8", step=10, data=bytes(40)))
    with pytest.raises(ValueError, match="empty"):
        image_to_array(Image(height=0, width=6, encoding="rgb8", step=18, data=b""))


def test_fit_square_crops_the_centre_and_resizes():
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, 16:112] = 200  # the centred square
    out = fit_square(img, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out == 200).all()
    assert fit_square(np.zeros((96, 96, 3), np.uint8), 96).shape == (96, 96, 3)
    assert fit_square(np.zeros((24, 40, 3), np.uint8), 96).shape == (96, 96, 3)  # 4x up: still taken
    with pytest.raises(ValueError, match="too small for the policy's 96x96 input"):
        fit_square(np.zeros((23, 400, 3), np.uint8), 96)


def test_joint_state():
    msg = array_to_joint_state(np.array([1.0, 2.0]), ns_to_stamp(5), ["x", "y"])
    np.testing.assert_array_equal(joint_state_to_array(msg, 2), [1.0, 2.0])
    with pytest.raises(ValueError, match="positions"):
        joint_state_to_array(JointState(position=[1.0]), 2)
    with pytest.raises(ValueError, match="NaN"):
        joint_state_to_array(JointState(position=[1.0, float("nan")]), 2)


def test_joint_state_by_name_takes_the_policys_order_from_a_robots_message():
    robot = JointState(name=["gripper", "y", "elbow", "x"], position=[0.5, 2.0, 9.0, 1.0])
    np.testing.assert_array_equal(joint_state_to_array(robot, 2, ["x", "y"]), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"no position for \['wrist'\] \(it names \['gripper'"):
        joint_state_to_array(robot, 2, ["x", "wrist"])
    with pytest.raises(ValueError, match="no position for"):  # names without positions
        joint_state_to_array(JointState(name=["x", "y"], position=[1.0]), 2, ["x", "y"])


def test_trajectory_round_trip():
    actions = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    msg = chunk_to_trajectory(actions, stamp_ns=10 * 10**9, rate_hz=10.0, joint_names=["x", "y"],
                              frame_id="pusht", execution_offset_s=0.05)
    assert stamp_to_ns(msg.header.stamp) == 10 * 10**9 + 50_000_000
    assert msg.header.frame_id == "pusht" and list(msg.joint_names) == ["x", "y"]
    assert [p.time_from_start.nanosec for p in msg.points] == [0, 100_000_000, 200_000_000]
    times, back = trajectory_to_chunk(msg, ["y", "x"])
    np.testing.assert_array_equal(back, actions[:, ::-1])
    assert times.tolist() == [10_050_000_000, 10_150_000_000, 10_250_000_000]


def test_trajectory_refuses_non_finite_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN or inf"):
        chunk_to_trajectory(np.array([[1.0, np.inf]]), 0, 10.0, ["x", "y"])
    with pytest.raises(ValueError, match="joint names"):
        chunk_to_trajectory(np.zeros((2, 3)), 0, 10.0, ["x", "y"])
    msg = chunk_to_trajectory(np.zeros((2, 2)), 0, 10.0, ["x", "y"])
    msg.points[1].positions = [0.0, float("nan")]
    with pytest.raises(ValueError, match="NaN or inf"):
        trajectory_to_chunk(msg)
    with pytest.raises(ValueError, match="lack"):
        trajectory_to_chunk(msg, ["z"])
