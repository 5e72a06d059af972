"""The node graph, described once for ``launch/bringup.launch.py`` and the one-process ``sag-bringup``.

Pure: reads ``config/sag_nodes.yaml`` (``<node>: ros__parameters:``), validates each node's parameters by
building its config dataclass, fills in what the policy checkpoint dictates (image size, To, state size; its
task's action range, joint names and frame; the sim's task) and returns :class:`NodeDescription` objects
(executable = node name = YAML key, parameters, remappings).
Imports no rclpy and no launch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from sag_ros.nodes.params import CameraNodeConfig, InferenceNodeConfig, SimNodeConfig, config_from_values
from sag_ros.policy.config import PolicyConfig, to_plain

# Topics. Relative names: in the root namespace they are /sag/actions and so on, and a node namespace (launch
# argument namespace:=robot1, or --ros-args -r __ns:=/robot1) moves the whole graph, so that two robots' graphs
# run side by side. The camera's inputs are relative too, so a real camera is a remapping away; /diagnostics stays
# absolute (the aggregator's topic) and each status names its node in full.
SIM_IMAGE_TOPIC = "sag/sim/image"
SIM_STATE_TOPIC = "sag/sim/joint_states"
CAMERA_IMAGE_INPUT = "image_raw"
CAMERA_STATE_INPUT = "joint_states"
OBS_IMAGE_TOPIC = "sag/observation/image"
OBS_STATE_TOPIC = "sag/observation/state"
ACTIONS_TOPIC = "sag/actions"
EPISODE_TOPIC = "sag/episode"
MASK_TOPIC = "sag/mask"  # the pruning mask, published only while someone subscribes
LATENCY_TOPIC = "sag/latency/{}"  # one std_msgs/Float64 topic per series, in milliseconds
LATENCY_SERIES = ("obs_age_ms", "plan_ms", "denoise_ms", "total_ms")
FRACTION_TOPIC = "sag/executed_fraction"
DIAGNOSTICS_TOPIC = "/diagnostics"
ENABLE_SERVICE = "enable"  # std_srvs/SetBool under the inference node's name (~/enable): pause / resume the chunks

CAMERA, INFERENCE, SIM = "sag_camera", "sag_inference", "sag_sim"
CONFIGS: dict[str, type] = {CAMERA: CameraNodeConfig, INFERENCE: InferenceNodeConfig, SIM: SimNodeConfig}


@dataclass(frozen=True)
class NodeDescription:
    """One node of the graph: its executable (= name = YAML key), parameters and remappings."""

    name: str
    parameters: Mapping[str, Any]
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def executable(self) -> str:
        return self.name

    def cli_args(self) -> list[str]:
        """The remappings as node-local ``--ros-args`` (for in-process nodes)."""
        if not self.remappings:
            return []
        args = ["--ros-args"]
        for src, dst in self.remappings:
            args += ["-r", f"{src}:={dst}"]
        return args


def default_config_path() -> Path:
    from sag_ros.resources import share_dir

    return share_dir() / "config" / "sag_nodes.yaml"


def load_node_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """``{node: {param: value}}`` from a ROS 2 parameter file; unknown nodes are refused by name."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(data) - set(CONFIGS))
    if unknown:
        raise ValueError(f"{path}: unknown nodes {unknown}; known nodes are {sorted(CONFIGS)}")
    out = {}
    for name, entry in data.items():
        if not isinstance(entry, Mapping) or set(entry) != {"ros__parameters"}:
            raise ValueError(f"{path}: {name} must hold exactly one 'ros__parameters' mapping")
        out[name] = dict(entry["ros__parameters"] or {})
    return out


def parse_node_parameter(text: str) -> tuple[str, str, Any]:
    """``NODE.NAME=VALUE`` (one parameter of one node, as a command line sets it) -> (node, name, value); the value is
    read as YAML, as a parameter file holds it. Which nodes and names exist is checked where they are applied."""
    target, sep, value = text.partition("=")
    node, dot, name = target.partition(".")
    if not (sep and dot and node and name):
        raise ValueError(f"{text!r}: expected NODE.NAME=VALUE, e.g. sag_inference.execution_offset_s=0.0125")
    return node, name, yaml.safe_load(value)


def node_overrides(entries: Iterable[tuple[str, str, Any]]) -> dict[str, dict[str, Any]]:
    """Parsed ``NODE.NAME=VALUE`` entries -> ``{node: {name: value}}`` (the later of two settings wins)."""
    overrides: dict[str, dict[str, Any]] = {}
    for node, name, value in entries:
        overrides.setdefault(node, {})[name] = value
    return overrides


def build_config(name: str, values: Mapping[str, Any]) -> Any:
    """Validate ``values`` as node ``name``'s config (ints given for float fields are widened)."""
    cls = CONFIGS[name]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{name}: unknown parameters {unknown}; known parameters are {sorted(known)}")
    return config_from_values(cls, dict(values))


def read_policy_config(model_path: str | Path) -> PolicyConfig | None:
    """The checkpoint's policy config, or None when it cannot be read here."""
    from sag_ros.policy.checkpoint import FORMAT, VERSION, CheckpointError, load_artifact

    try:
        return PolicyConfig.from_dict(load_artifact(Path(model_path), FORMAT, VERSION)["config"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None  # the inference node reports the problem clearly at start


def policy_inputs(config: PolicyConfig) -> dict[str, int]:
    """What the camera must produce for this policy."""
    return {"image_size": config.encoder.image_size, "n_obs_steps": config.denoiser.n_obs_steps,
            "state_dim": config.encoder.state_dim}


def task_parameters(config: PolicyConfig) -> dict[str, dict[str, Any]]:
    """What the task the policy was trained on dictates, per node: the inference node's safety bounds (the task's
    valid action range), joint names and frame; the sim node's task, joint names and frame."""
    from sag_ros.sim.task import get_task

    task = get_task(config.task)
    names = {"joint_names": list(task.joint_names), "frame_id": task.name}
    return {INFERENCE: {"action_min": list(task.action_low), "action_max": list(task.action_high), **names},
            SIM: {"task": task.name, **names}}


def describe_graph(config_path: str | Path | None = None, *, model_path: str = "", pruner_path: str = "",
                   backend: str = "", hold_x0: str = "", interval: tuple[int, int] | None = None, rate: float = 0.0,
                   trigger: str = "", use_sim: bool = True,
                   overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[NodeDescription]:
    """The nodes to start: camera + inference (+ sim), with every parameter explicit and validated.

    Empty arguments keep the parameter file's values; ``pruner_path="none"`` forces dense denoising;
    ``interval=(n, start)`` runs interval caching (every n-th step from step start) in place of a pruner. What the
    policy's task dictates (:func:`task_parameters`) replaces the parameter file's values unless ``overrides``
    set them, so a Meta-World checkpoint brings up a Meta-World graph.
    """
    params = load_node_parameters(Path(config_path) if config_path else default_config_path())
    for name, extra in (overrides or {}).items():
        if name not in CONFIGS:
            raise ValueError(f"overrides: unknown node {name!r}; known nodes are {sorted(CONFIGS)}")
        params.setdefault(name, {}).update(extra)
    inference = params.setdefault(INFERENCE, {})
    if model_path:
        inference["model_path"] = str(model_path)
    if pruner_path:
        inference["pruner_path"] = "" if pruner_path == "none" else str(pruner_path)
    if backend:
        inference["backend"] = backend
    if hold_x0:
        inference["hold_x0"] = hold_x0
    if interval is not None:  # (n, start): every n-th step from step start computes
        inference["interval"], inference["interval_start"] = int(interval[0]), int(interval[1])
    if trigger:
        inference["trigger"] = trigger
    if rate:  # the sim steps at this rate, so the chunks' actions are spaced at it too
        inference["control_rate_hz"] = inference["action_rate_hz"] = float(rate)
        params.setdefault(SIM, {})["control_rate_hz"] = float(rate)
    if not inference.get("model_path"):
        from sag_ros.resources import default_policy_path

        inference["model_path"] = str(default_policy_path())
    policy = read_policy_config(inference["model_path"])
    if policy is not None:
        params.setdefault(CAMERA, {}).update(policy_inputs(policy))
        for name, values in task_parameters(policy).items():
            given = (overrides or {}).get(name, {})
            params.setdefault(name, {}).update({k: v for k, v in values.items() if k not in given})

    names = [CAMERA, INFERENCE] + ([SIM] if use_sim else [])
    camera_remaps = ((CAMERA_IMAGE_INPUT, SIM_IMAGE_TOPIC), (CAMERA_STATE_INPUT, SIM_STATE_TOPIC)) if use_sim else ()
    return [NodeDescription(name, to_plain(build_config(name, params.get(name, {}))),
                            camera_remaps if name == CAMERA else ()) for name in names]
