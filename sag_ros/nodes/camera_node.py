"""``sag_camera``: camera frames + robot state -> policy-sized observations, stamped with the camera stamp.

Subscribes ``image_raw`` (``sensor_msgs/Image``, sensor-data QoS, depth 1) and ``joint_states``
(``sensor_msgs/JointState``; the first ``state_dim`` positions are the proprioception). Each accepted
frame is centre-cropped and resized to the policy's square input, paired with the newest state, kept in
an :class:`ObservationBuffer` (the last To observations) and republished as ``/sag/observation/image``
(rgb8) + ``/sag/observation/state``, both stamped with the camera header stamp. When the inference node
runs in the same process it reads the same buffer object directly.
"""

from __future__ import annotations

import copy
import threading
from typing import Callable

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState

from sag_ros.nodes.convert import (array_to_image, array_to_joint_state, fit_square, image_to_array,
                                   joint_state_to_array, stamp_to_ns)
from sag_ros.nodes.graph import CAMERA_IMAGE_INPUT, CAMERA_STATE_INPUT, OBS_IMAGE_TOPIC, OBS_STATE_TOPIC
from sag_ros.nodes.lifecycle import run_node
from sag_ros.nodes.params import CameraNodeConfig, ConfigParameters


def sensor_qos_depth1() -> QoSProfile:
    """Sensor-data QoS (best effort, volatile) keeping one message: a late frame is worth less than the next."""
    qos = copy.copy(qos_profile_sensor_data)
    qos.depth = 1
    return qos


class ObservationBuffer:
    """Thread-safe history of the last To (stamp, image, state) observations; ROS-free.

    :meth:`latest` pads a short history by repeating its oldest entry (as Diffusion Policy does at an
    episode start). A stamp that goes backwards (a restarted source) clears the history.
    """

    def __init__(self, n_obs_steps: int, image_size: int, state_dim: int) -> None:
        self.n_obs_steps, self.image_size, self.state_dim = n_obs_steps, image_size, state_dim
        self._images = np.zeros((n_obs_steps, image_size, image_size, 3), dtype=np.uint8)
        self._states = np.zeros((n_obs_steps, state_dim), dtype=np.float32)
        self._stamps = np.zeros(n_obs_steps, dtype=np.int64)
        self._count = 0
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []

    def add_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(stamp_ns)`` after each observation kept, on the pushing thread (outside the lock)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[int], None]) -> None:
        self._listeners.remove(listener)

    def push(self, stamp_ns: int, image: np.ndarray, state: np.ndarray) -> bool:
        """Append an observation and tell the listeners; False (and nothing kept) for a repeat of the newest
        stamp."""
        if image.shape != self._images.shape[1:]:
            raise ValueError(f"image shape {image.shape} != {self._images.shape[1:]}")
        if state.shape != self._states.shape[1:]:
            raise ValueError(f"state shape {state.shape} != {self._states.shape[1:]}")
        with self._lock:
            if self._count and stamp_ns <= self._stamps[-1]:
                if stamp_ns == self._stamps[-1]:
                    return False
                self._count = 0
            self._images[:-1] = self._images[1:]
            self._states[:-1] = self._states[1:]
            self._stamps[:-1] = self._stamps[1:]
            self._images[-1], self._states[-1], self._stamps[-1] = image, state, stamp_ns
            self._count = min(self._count + 1, self.n_obs_steps)
        for listener in list(self._listeners):
            listener(stamp_ns)
        return True

    def clear(self) -> None:
        with self._lock:
            self._count = 0

    def latest_stamp_ns(self) -> int | None:
        with self._lock:
            return int(self._stamps[-1]) if self._count else None

    def latest(self) -> tuple[int, dict[str, np.ndarray]] | None:
        """(stamp of the newest entry, {"image": [To, H, W, 3], "state": [To, S]}) or None when empty."""
        with self._lock:
            if not self._count:
                return None
            first = self.n_obs_steps - self._count
            images, states = self._images.copy(), self._states.copy()
            stamp = int(self._stamps[-1])
        images[:first], states[:first] = images[first], states[first]
        return stamp, {"image": images, "state": states}


class CameraNode(Node):
    def __init__(self, buffer: ObservationBuffer | None = None, *, name: str = "sag_camera", **node_kwargs) -> None:
        super().__init__(name, **node_kwargs)
        self.params = ConfigParameters(self, CameraNodeConfig)
        cfg = self.params.config
        if buffer is not None and (buffer.image_size, buffer.state_dim) != (cfg.image_size, cfg.state_dim):
            raise ValueError(f"shared buffer holds {buffer.image_size}px images and {buffer.state_dim}-d states; "
                             f"parameters say {cfg.image_size} and {cfg.state_dim}")
        self.buffer = buffer or ObservationBuffer(cfg.n_obs_steps, cfg.image_size, cfg.state_dim)
        self.frames_in = self.frames_out = self.frames_dropped = 0
        self._state: np.ndarray | None = None
        self._state_stamp_ns = 0
        self._state_names: list[str] = []
        self._state_joints = [] if cfg.state_joints == ["*"] else cfg.state_joints  # read by name, or by position
        self._image_pub = self.create_publisher(Image, OBS_IMAGE_TOPIC, 1)
        self._state_pub = self.create_publisher(JointState, OBS_STATE_TOPIC, 1)
        self.create_subscription(JointState, CAMERA_STATE_INPUT, self._on_state, 10)
        self.create_subscription(Image, CAMERA_IMAGE_INPUT, self._on_image, sensor_qos_depth1())

    def _on_state(self, msg: JointState) -> None:
        cfg = self.params.config
        try:
            self._state = joint_state_to_array(msg, cfg.state_dim, self._state_joints)
        except ValueError as exc:
            self.get_logger().warning(f"robot state dropped: {exc}", throttle_duration_sec=cfg.warn_throttle_s)
            return
        self._state_stamp_ns = stamp_to_ns(msg.header.stamp)
        self._state_names = (self._state_joints or list(msg.name[:cfg.state_dim])
                             or [f"q{i}" for i in range(cfg.state_dim)])

    def _on_image(self, msg: Image) -> None:
        cfg = self.params.config
        self.frames_in += 1
        stamp_ns = stamp_to_ns(msg.header.stamp)
        try:
            rgb = fit_square(image_to_array(msg), cfg.image_size)
            if self._state is None:
                raise ValueError("no robot state received yet")
            state_age = abs(stamp_ns - self._state_stamp_ns) * 1e-9
            if state_age > cfg.max_state_age_s:
                raise ValueError(f"robot state is {state_age:.3f} s away from the frame (max {cfg.max_state_age_s} s)")
            state = self._state
            if not self.buffer.push(stamp_ns, rgb, state):
                raise ValueError(f"its stamp {stamp_ns} repeats the previous frame's (a camera driver that does not "
                                 "stamp its frames?)")
        except ValueError as exc:
            self.frames_dropped += 1
            self.get_logger().warning(f"frame dropped: {exc}", throttle_duration_sec=cfg.warn_throttle_s)
            return
        self._image_pub.publish(array_to_image(rgb, msg.header.stamp, msg.header.frame_id))
        self._state_pub.publish(array_to_joint_state(state, msg.header.stamp, self._state_names))
        self.frames_out += 1


def main(args=None) -> None:
    run_node(CameraNode, args=args)


if __name__ == "__main__":
    main()
