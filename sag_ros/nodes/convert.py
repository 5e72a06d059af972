"""Pure conversions between ROS messages and numpy arrays: no rclpy, no clock, no logger.

- ``sensor_msgs/Image`` <-> uint8 RGB [H, W, 3] (rgb8, bgr8, rgba8, bgra8 and mono8 in; rgb8 out), honouring
  ``step``; alpha is dropped (the policies learned from opaque frames; many depth cameras publish bgra8);
- :func:`fit_square`: centre-crop + resize to the policy's square input;
- ``sensor_msgs/JointState`` <-> float32 state vector;
- action chunk [Ta, A] <-> ``trajectory_msgs/JointTrajectory`` (one point per action, ``time_from_start``
  = k / rate, header stamp = observation stamp + execution offset).

Every refusal is a ``ValueError`` naming the problem.
"""

from __future__ import annotations

import array

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import MultiArrayDimension, UInt8MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
SUPPORTED_ENCODINGS = tuple(_CHANNELS)

# -- time --------------------------------------------------------------------------------------------


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def seconds_to_duration(seconds: float) -> Duration:
    sec, nanosec = divmod(int(round(seconds * 1e9)), 1_000_000_000)
    return Duration(sec=sec, nanosec=nanosec)


# -- images ------------------------------------------------------------------------------------------


def image_to_array(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> uint8 RGB [H, W, 3] (a copy); mono8 is replicated to 3 channels, alpha dropped."""
    if msg.encoding not in _CHANNELS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; supported: {list(SUPPORTED_ENCODINGS)}")
    channels = _CHANNELS[msg.encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ValueError(f"image has an empty size {width}x{height}")
    row_bytes = width * channels
    if step < row_bytes:
        raise ValueError(f"image step {step} is smaller than width*channels = {row_bytes} ({msg.encoding})")
    if len(msg.data) != step * height:
        raise ValueError(f"image data has {len(msg.data)} bytes; step*height = {step}*{height} = {step * height}")
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)  # 8-bit: no byte order
    pixels = rows[:, :row_bytes].reshape(height, width, channels)
    if msg.encoding in ("rgb8", "rgba8"):
        return pixels[:, :, :3].copy()
    if msg.encoding in ("bgr8", "bgra8"):
        return pixels[:, :, 2::-1].copy()
    return np.repeat(pixels, 3, axis=2)


def array_to_image(rgb: np.ndarray, stamp: Time, frame_id: str = "") -> Image:
    """uint8 RGB [H, W, 3] -> ``sensor_msgs/Image`` (rgb8, no row padding)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB array [H, W, 3], got {rgb.dtype} {rgb.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = int(rgb.shape[1]) * 3
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg


MAX_UPSCALE = 4
"""A frame whose shorter side is below 1/MAX_UPSCALE of the policy's input is refused rather than blown up: it is a
thumbnail or the wrong stream, and the policy would act on a blur it never saw in training."""


def fit_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to ``size`` x ``size`` (INTER_AREA down, INTER_LINEAR up)."""
    import cv2

    height, width = rgb.shape[:2]
    side = min(height, width)
    if side * MAX_UPSCALE < size:
        raise ValueError(f"a {width}x{height} frame is too small for the policy's {size}x{size} input (more than "
                         f"{MAX_UPSCALE}x upscaling): a thumbnail or the wrong image stream?")
    top, left = (height - side) // 2, (width - side) // 2
    square = rgb[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(square), (size, size), interpolation=interpolation)


# -- robot state ---------------------------------------------------------------------------------------


def joint_state_to_array(msg: JointState, dim: int, names: Sequence[str] = ()) -> np.ndarray:
    """The state a policy reads from a ``JointState``, as float32: the positions of ``names`` in that order, or
    without names the first ``dim`` positions (Push-T's sim publishes exactly the agent's x, y). A robot's
    ``/joint_states`` holds every joint in an order of its own, so on a robot name the ones the policy reads."""
    if names:
        index = {name: i for i, name in enumerate(msg.name)}
        missing = [name for name in names if name not in index or index[name] >= len(msg.position)]
        if missing:
            raise ValueError(f"joint state has no position for {missing} (it names {list(msg.name)})")
        state = np.asarray([msg.position[index[name]] for name in names], dtype=np.float32)
    elif len(msg.position) < dim:
        raise ValueError(f"joint state has {len(msg.position)} positions; the policy needs {dim}")
    else:
        state = np.asarray(msg.position[:dim], dtype=np.float32)
    if not np.isfinite(state).all():
        raise ValueError("joint state contains NaN or inf")
    return state


def array_to_joint_state(state: np.ndarray, stamp: Time, names: Sequence[str]) -> JointState:
    state = np.asarray(state, dtype=np.float64).reshape(-1)
    if len(names) != len(state):
        raise ValueError(f"{len(names)} joint names for a state of size {len(state)}")
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = state.tolist()
    return msg


# -- action chunks ---------------------------------------------------------------------------------------


def chunk_to_trajectory(actions: np.ndarray, stamp_ns: int, rate_hz: float, joint_names: Sequence[str],
                        frame_id: str = "", execution_offset_s: float = 0.0) -> JointTrajectory:
    """Action chunk [Ta, A] -> ``JointTrajectory``; point k is due at stamp + offset + k / rate."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f"expected an action chunk [Ta, A] with Ta >= 1, got shape {actions.shape}")
    if actions.shape[1] != len(joint_names):
        raise ValueError(f"action dimension {actions.shape[1]} != {len(joint_names)} joint names {list(joint_names)}")
    if not np.isfinite(actions).all():
        raise ValueError("action chunk contains NaN or inf")
    if not rate_hz > 0:
        raise ValueError(f"rate_hz={rate_hz} must be > 0")
    msg = JointTrajectory()
    msg.header.stamp = ns_to_stamp(stamp_ns + int(round(execution_offset_s * 1e9)))
    msg.header.frame_id = frame_id
    msg.joint_names = list(joint_names)
    for k, action in enumerate(actions):
        msg.points.append(JointTrajectoryPoint(positions=action.tolist(),
                                               time_from_start=seconds_to_duration(k / rate_hz)))
    return msg


def trajectory_to_chunk(msg: JointTrajectory, joint_names: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``JointTrajectory`` -> (due times [N] in ns since the epoch, actions [N, A]); refuses NaN/inf.

    With ``joint_names``, the columns are reordered to that order (and missing names are refused).
    """
    if not msg.points:
        raise ValueError("trajectory has no points")
    names = list(msg.joint_names)
    if joint_names is not None:
        missing = [n for n in joint_names if n not in names]
        if missing:
            raise ValueError(f"trajectory joints {names} lack {missing}")
        order = [names.index(n) for n in joint_names]
    else:
        order = list(range(len(names)))
    start = stamp_to_ns(msg.header.stamp)
    times = np.empty(len(msg.points), dtype=np.int64)
    actions = np.empty((len(msg.points), len(order)), dtype=np.float64)
    for k, point in enumerate(msg.points):
        if len(point.positions) != len(names):
            raise ValueError(f"point {k} has {len(point.positions)} positions for {len(names)} joints")
        times[k] = start + point.time_from_start.sec * 1_000_000_000 + point.time_from_start.nanosec
        actions[k] = [point.positions[i] for i in order]
    if not np.isfinite(actions).all():
        raise ValueError("trajectory contains NaN or inf")
    if np.any(np.diff(times) < 0):
        raise ValueError("trajectory points are not in time order")
    return times, actions


# -- pruning masks ------------------------------------------------------------------------------------


def mask_to_msg(mask: np.ndarray) -> UInt8MultiArray:
    """Bool mask [steps, blocks] (True = pruned) -> ``UInt8MultiArray`` of its bits, 8 cells a byte.

    ``data`` is ``np.packbits`` of the row-major cells (first cell in the high bit, the last byte zero-padded);
    ``layout.dim`` gives the cell grid (labels ``steps`` and ``blocks``, sizes and strides in cells).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-d [steps, blocks], got shape {mask.shape}")
    steps, blocks = mask.shape
    msg = UInt8MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="steps", size=steps, stride=steps * blocks),
                      MultiArrayDimension(label="blocks", size=blocks, stride=blocks)]
    msg.data = array.array("B", np.packbits(mask, axis=None).tobytes())
    return msg


def msg_to_mask(msg: UInt8MultiArray) -> np.ndarray:
    """Inverse of :func:`mask_to_msg`: bool [steps, blocks]; ValueError if the layout does not fit the data."""
    labels = [d.label for d in msg.layout.dim]
    if labels != ["steps", "blocks"]:
        raise ValueError(f"mask layout must be [steps, blocks], got {labels}")
    steps, blocks = (d.size for d in msg.layout.dim)
    packed = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if len(packed) != (steps * blocks + 7) // 8:
        raise ValueError(f"mask of {steps}x{blocks} cells needs {(steps * blocks + 7) // 8} bytes, got {len(packed)}")
    return np.unpackbits(packed, count=steps * blocks).astype(bool).reshape(steps, blocks)
