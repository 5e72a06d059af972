"""One self-validating dataclass per node, mirrored one-to-one onto described ROS parameters.

Each field carries its description and whether it is structural (``read_only``: fixed once the node is
built). :class:`ConfigParameters` declares one parameter per field, rebuilds the dataclass from the
node's values, and validates every later change by building a new dataclass in an on-set callback, so
a bad ``ros2 param set`` is refused with the dataclass's own message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

def _param(default: Any, description: str, *, read_only: bool = False) -> Any:
    metadata = {"description": description, "read_only": read_only}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class CameraNodeConfig:
    """``sag_camera``: camera frames + robot state -> policy-sized, stamped observations."""

    image_size: int = _param(96, "side of the square image the policy reads (centre-crop + resize)", read_only=True)
    state_dim: int = _param(2, "proprioception size", read_only=True)
    state_joints: list = _param(["*"], "names of the JointState entries the policy reads, in its order (a robot's "
                                "/joint_states holds every joint in an order of its own); ['*'] = the first "
                                "state_dim positions, whatever their names", read_only=True)
    n_obs_steps: int = _param(2, "observation history kept (To)", read_only=True)
    max_state_age_s: float = _param(0.5, "a frame is dropped when the newest robot state is older than this")
    warn_throttle_s: float = _param(2.0, "minimum seconds between two warnings about dropped frames")

    def __post_init__(self) -> None:
        _require(self.image_size > 0, f"image_size={self.image_size} must be > 0")
        _require(self.state_dim >= 0, f"state_dim={self.state_dim} must be >= 0")
        _require(self.n_obs_steps >= 1, f"n_obs_steps={self.n_obs_steps} must be >= 1")
        self.state_joints = [str(n) for n in self.state_joints]
        _require(self.state_joints == ["*"] or len(self.state_joints) == self.state_dim,
                 f"state_joints={self.state_joints} must name state_dim={self.state_dim} joints, or be ['*']")
        _require(self.max_state_age_s > 0, f"max_state_age_s={self.max_state_age_s} must be > 0")
        _require(self.warn_throttle_s >= 0, f"warn_throttle_s={self.warn_throttle_s} must be >= 0")


HOLD_X0_CHOICES = {"": None, "on": True, "off": False}
"""``hold_x0`` parameter values -> ``PredictorSpec.hold_x0`` (None: the pruner's own setting)."""
TRIGGERS = ("timer", "frame")
"""What starts an inference chunk (:mod:`sag_ros.nodes.inference_node`)."""


@dataclass
class InferenceNodeConfig:
    """``sag_inference``: newest observation -> action chunk, on a timer, off the executor thread."""

    model_path: str = _param("", "policy checkpoint; empty = the shipped default policy", read_only=True)
    pruner_path: str = _param("", "SAG pruner file (sag_ros.sparse); empty = dense denoising", read_only=True)
    interval: int = _param(0, "interval caching instead of a pruner: every n-th denoising step computes all blocks, "
                           "the others reuse (or, with hold_x0 'on', hold); the static baseline to run SAG against "
                           "on the robot; 0 = off", read_only=True)
    interval_start: int = _param(0, "with interval: the step from which every n-th step computes (step 0 always "
                                 "does); a late start spends the budget on the low-noise steps (5 from 50, 11 steps, is "
                                 "the schedule the shipped Push-T pruner starts from); 0 = uniform", read_only=True)
    hold_x0: str = _param("", "held steps: 'on' = a step whose every block the pruner skips runs no network and "
                          "keeps the last computed clean-chunk prediction, 'off' = its blocks reuse cached outputs; "
                          "empty = the pruner's training setting (no effect on dense denoising)", read_only=True)
    backend: str = _param("eager", "block backend: eager, compile, onnxruntime or tensorrt (eager needs no extra "
                          "package; the shipped parameter file picks onnxruntime)", read_only=True)
    engine_cache: str = _param("", "folder of the backend's compiled blocks; empty = <model>.engines beside the "
                               "checkpoint, or ~/.cache/sag_ros/ when that folder is read-only", read_only=True)
    sampler: str = _param("", "reverse-diffusion sampler 'ddpm' or 'ddim'; empty = the pruner's (its masks are for "
                          "one sampler), else the checkpoint's", read_only=True)
    num_steps: int = _param(0, "denoising steps per chunk (K); 0 = the pruner's, else the checkpoint's",
                            read_only=True)
    noise_scale: float = _param(1.0, "multiplies DDPM's fresh noise per step (1 = the sampler as trained; below 1 "
                                "samples lie nearer the modes: the sampling temperature some tasks prefer lower)",
                                read_only=True)
    threads: int = _param(1, "torch intra-op threads", read_only=True)
    control_rate_hz: float = _param(10.0, "chunk rate: chunks start at most this often", read_only=True)
    action_rate_hz: float = _param(0.0, "spacing of a chunk's actions, point k due k / rate after the observation: "
                                   "the rate the policy's demonstrations were recorded at; 0 = its task's control "
                                   "rate (Push-T 10 Hz, Meta-World 80 Hz)", read_only=True)
    actions_per_chunk: int = _param(0, "actions published per chunk: 0 = every predicted one from the observation's "
                                    "step to the end of the horizon (Tp - To + 1), so a chunk that arrives late "
                                    "still has actions due until the next replaces it; n = the first n (DP executes "
                                    "Ta before it replans)", read_only=True)
    trigger: str = _param("frame", "what starts a chunk: 'frame' (a new observation, at most control_rate_hz on "
                          "average: each chunk starts from a frame a few ms old; a camera at a multiple of the rate "
                          "gives even gaps) or 'timer' (a fixed-rate timer, whatever the frames' phase)",
                          read_only=True)
    stale_timeout_s: float = _param(0.5, "observations older than this are never acted on")
    execution_offset_s: float = _param(0.0, "added to the observation stamp to stamp the chunk")
    frame_id: str = _param("pusht", "frame of the published trajectories")
    joint_names: list = _param(["x", "y"], "one name per action dimension", read_only=True)
    action_min: list = _param([0.0, 0.0], "lower bound per action dimension (Push-T's; the launch graph sets the "
                              "policy task's range)")
    action_max: list = _param([512.0, 512.0], "upper bound per action dimension (Push-T's; the launch graph sets "
                              "the policy task's range)")
    action_margin: float = _param(0.05, "fraction of each dimension's range an action may overshoot its bound by: "
                                  "it is clamped to the bound; a chunk farther out (or not finite) is not published")
    seed: int = _param(0, "seed of the sampling noise; inference attempt i uses seed + i")
    stats_window: int = _param(100, "chunks in the latency window", read_only=True)
    diagnostics_period_s: float = _param(1.0, "seconds between two /diagnostics messages", read_only=True)
    start_enabled: bool = _param(True, "publish chunks from the start; false = load and warm up the model, then "
                                 "wait for ~/enable (std_srvs/SetBool) to be called with true", read_only=True)

    def __post_init__(self) -> None:
        if isinstance(self.hold_x0, bool):  # YAML reads an unquoted on/off (-p hold_x0:=on) as a boolean
            self.hold_x0 = "on" if self.hold_x0 else "off"
        self.joint_names = [str(n) for n in self.joint_names]
        self.action_min = [float(v) for v in self.action_min]
        self.action_max = [float(v) for v in self.action_max]
        from sag_ros.engine import BACKENDS

        _require(self.backend in BACKENDS, f"backend={self.backend!r} must be one of {sorted(BACKENDS)}")
        _require(self.sampler in ("", "ddpm", "ddim"), f"sampler={self.sampler!r} must be '', 'ddpm' or 'ddim'")
        _require(self.hold_x0 in HOLD_X0_CHOICES, f"hold_x0={self.hold_x0!r} must be '', 'on' or 'off'")
        _require(self.num_steps >= 0, f"num_steps={self.num_steps} must be >= 0")
        _require(0 <= self.noise_scale < float("inf"), f"noise_scale={self.noise_scale} must be a number >= 0")
        _require(self.interval >= 0, f"interval={self.interval} must be >= 0 (0 = off)")
        _require(self.interval_start >= 0, f"interval_start={self.interval_start} must be >= 0")
        _require(self.interval or not self.interval_start,
                 f"interval_start={self.interval_start} needs interval > 0 (every n-th step from interval_start)")
        _require(not (self.interval and self.pruner_path),
                 f"interval={self.interval} and pruner_path={self.pruner_path!r}: set one schedule, not both")
        _require(self.threads >= 1, f"threads={self.threads} must be >= 1")
        _require(self.control_rate_hz > 0, f"control_rate_hz={self.control_rate_hz} must be > 0")
        _require(self.action_rate_hz >= 0, f"action_rate_hz={self.action_rate_hz} must be >= 0 (0 = the task's)")
        _require(self.actions_per_chunk >= 0, f"actions_per_chunk={self.actions_per_chunk} must be >= 0 (0 = all)")
        _require(self.trigger in TRIGGERS, f"trigger={self.trigger!r} must be one of {list(TRIGGERS)}")
        _require(self.stale_timeout_s > 0, f"stale_timeout_s={self.stale_timeout_s} must be > 0")
        _require(len(self.joint_names) >= 1, "joint_names must not be empty")
        _require(len(self.action_min) == len(self.action_max) == len(self.joint_names),
                 f"action_min ({len(self.action_min)}), action_max ({len(self.action_max)}) and joint_names "
                 f"({len(self.joint_names)}) must have the same length")
        _require(all(lo < hi for lo, hi in zip(self.action_min, self.action_max)),
                 f"action_min={self.action_min} must be below action_max={self.action_max}")
        _require(self.action_margin >= 0, f"action_margin={self.action_margin} must be >= 0")
        _require(self.stats_window >= 2, f"stats_window={self.stats_window} must be >= 2")
        _require(self.diagnostics_period_s > 0, f"diagnostics_period_s={self.diagnostics_period_s} must be > 0")

    @property
    def period_s(self) -> float:
        return 1.0 / self.control_rate_hz


@dataclass
class SimNodeConfig:
    """``sag_sim``: a task adapter stepped in real time, driven by the newest action chunk."""

    task: str = _param("pusht", "task name (sag_ros.sim.task registry)", read_only=True)
    seed: int = _param(100_000, "seed of the first episode; episode i uses seed + i", read_only=True)
    num_episodes: int = _param(1, "episodes to run before reporting the summary and finishing", read_only=True)
    max_steps: int = _param(0, "steps per episode; 0 = the task's own limit", read_only=True)
    control_rate_hz: float = _param(0.0, "steps per second; 0 = the task's control rate", read_only=True)
    wait_for_actions: bool = _param(True, "hold the episode (publishing observations) until its first chunk")
    frame_id: str = _param("pusht", "frame of the published image and state")
    joint_names: list = _param(["x", "y"], "names of the state/action dimensions", read_only=True)

    def __post_init__(self) -> None:
        self.joint_names = [str(n) for n in self.joint_names]
        _require(self.num_episodes >= 1, f"num_episodes={self.num_episodes} must be >= 1")
        _require(self.max_steps >= 0, f"max_steps={self.max_steps} must be >= 0")
        _require(self.control_rate_hz >= 0, f"control_rate_hz={self.control_rate_hz} must be >= 0")
        _require(len(self.joint_names) >= 1, "joint_names must not be empty")


C = TypeVar("C")


def field_names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def _as_float(name: str, value: Any) -> float:
    """A float parameter's value: ints widen (YAML ``10``, ``-p rate:=10``); NaN and inf are refused, since
    every float here is a time, a rate, a margin or a bound, and an infinite one silently disables a safety check."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} must be a number")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} must be finite")
    return float(value)


def _as_type_of(name: str, default: Any, value: Any) -> Any:
    """``value`` as the type of the field's ``default``, or a ValueError that names the parameter."""
    if isinstance(default, float):
        return _as_float(name, value)
    if isinstance(default, list):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise ValueError(f"{name}={value!r} must be a list")
        if default and isinstance(default[0], float):
            return [_as_float(f"{name}[{i}]", v) for i, v in enumerate(value)]
        return list(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name}={value!r} must be true or false")
    elif isinstance(default, int) and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{name}={value!r} must be an integer")
    return value  # strings: each config checks its own (a YAML 'on' may arrive as a bool, see hold_x0)


def config_from_values(cls: type[C], values: dict[str, Any]) -> C:
    """Build (and so validate) a config from parameter values, each converted to its field's type (arrays become
    lists, float fields take ints) or refused with a message that names it."""
    defaults = cls()
    return cls(**{key: _as_type_of(key, getattr(defaults, key), value) if hasattr(defaults, key) else value
                  for key, value in values.items()})


class ConfigParameters(Generic[C]):
    """Binds a config dataclass to a node's parameters: declare, rebuild, validate on set.

    ``config`` always holds the last accepted values (updated after a successful set).
    """

    def __init__(self, node: Any, cls: type[C]) -> None:
        from rcl_interfaces.msg import ParameterDescriptor

        from sag_ros.nodes.lifecycle import BadParametersError

        self._node, self._cls = node, cls
        defaults = cls()
        for f in fields(cls):
            # Dynamically typed for rclpy: types are checked once, by config_from_values, which widens an integer
            # given for a float (``-p control_rate_hz:=10``, a YAML ``[512, 512]``) where rclpy would refuse it
            # with a traceback, and names the parameter when a value has the wrong type.
            node.declare_parameter(f.name, getattr(defaults, f.name), ParameterDescriptor(
                name=f.name, description=f.metadata.get("description", ""),
                read_only=bool(f.metadata.get("read_only", False)), dynamic_typing=True))
        try:
            self.config: C = self._rebuild({})
        except (ValueError, TypeError) as exc:
            raise BadParametersError(f"{node.get_name()}: bad parameters: {exc}") from exc
        node.add_on_set_parameters_callback(self._validate)
        node.add_post_set_parameters_callback(self._accept)

    def _rebuild(self, changes: dict[str, Any]) -> C:
        values = {f.name: self._node.get_parameter(f.name).value for f in fields(self._cls)}
        values.update(changes)
        return config_from_values(self._cls, values)

    def _validate(self, parameters: list) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        known = set(field_names(self._cls))
        changes = {p.name: p.value for p in parameters if p.name in known}
        try:
            self._rebuild(changes)
        except (ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _accept(self, parameters: list) -> None:
        self.config = self._rebuild({})
