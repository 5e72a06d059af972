"""Node configs <-> ROS parameters (sag_ros.nodes.params) and the shared graph description (graph.py)."""

import re
from dataclasses import fields

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("rclpy", reason="rclpy absent: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from ros_fixtures import *  # noqa: E402,F401,F403
from sag_ros.nodes.lifecycle import NodeStartupError  # noqa: E402
from sag_ros.nodes.graph import CONFIGS, describe_graph, load_node_parameters, default_config_path  # noqa: E402
from sag_ros.nodes.params import (CameraNodeConfig, ConfigParameters, InferenceNodeConfig,  # noqa: E402
                                  SimNodeConfig)
from sag_ros.sim.task import get_task  # noqa: E402
from sag_ros.resources import default_pruner_for  # noqa: E402


@pytest.mark.parametrize("cls", [CameraNodeConfig, InferenceNodeConfig, SimNodeConfig])
def test_fields_equal_declared_parameters(ros_context, cls):
    node = Node("params_under_test", context=ros_context)
    try:
        builtin = set(node.list_parameters([], 0).names)  # use_sim_time, start_type_description_service
        binding = ConfigParameters(node, cls)
        declared = set(node.list_parameters([], 0).names) - builtin
        assert declared == {f.name for f in fields(cls)}
        for f in fields(cls):
            assert node.get_parameter(f.name).value == getattr(binding.config, f.name)
            descriptor = node.describe_parameter(f.name)
            assert descriptor.description, f"{f.name} has no description"
            assert descriptor.read_only == f.metadata["read_only"]
    finally:
        node.destroy_node()


def test_on_set_validates_by_building_a_new_config(ros_context):
    node = Node("params_under_test", context=ros_context)
    try:
        binding = ConfigParameters(node, InferenceNodeConfig)
        result = node.set_parameters([Parameter("stale_timeout_s", value=-1.0)])[0]
        assert not result.successful and "stale_timeout_s" in result.reason
        assert binding.config.stale_timeout_s == 0.5
        assert node.set_parameters([Parameter("stale_timeout_s", value=0.25)])[0].successful
        assert binding.config.stale_timeout_s == 0.25
        assert not node.set_parameters([Parameter("num_steps", value=3)])[0].successful  # read-only
    finally:
        node.destroy_node()


def test_overrides_reach_the_config(ros_context):
    node = Node("params_under_test", context=ros_context,
                parameter_overrides=[Parameter("control_rate_hz", value=20.0),
                                     Parameter("joint_names", value=["a", "b"])])
    try:
        cfg = ConfigParameters(node, InferenceNodeConfig).config
        assert cfg.control_rate_hz == 20.0 and cfg.joint_names == ["a", "b"]
    finally:
        node.destroy_node()


def test_integers_for_floats_and_yaml_booleans_for_on_off_are_taken(ros_context):
    """What `-p control_rate_hz:=10`, a YAML `action_max: [512, 512]` and `-p hold_x0:=on` (YAML reads `on` as
    true) produce: rclpy alone would refuse each with a type error at declaration."""
    node = Node("params_under_test", context=ros_context,
                parameter_overrides=[Parameter("control_rate_hz", value=20), Parameter("action_max", value=[400, 500]),
                                     Parameter("hold_x0", value=True)])
    try:
        cfg = ConfigParameters(node, InferenceNodeConfig).config
        assert cfg.control_rate_hz == 20.0 and isinstance(cfg.control_rate_hz, float)
        assert cfg.action_max == [400.0, 500.0] and cfg.hold_x0 == "on"
    finally:
        node.destroy_node()


@pytest.mark.parametrize("name, value, message", [
    ("execution_offset_s", float("nan"), "execution_offset_s=nan must be finite"),
    ("stale_timeout_s", float("inf"), "stale_timeout_s=inf must be finite"),  # would disable the stale check
    ("action_min", [0.0, float("-inf")], r"action_min\[1\]=-inf must be finite"),
    ("seed", "abc", "seed='abc' must be an integer"),
])
def test_non_finite_or_mistyped_values_are_refused_naming_the_parameter(ros_context, name, value, message):
    node = Node("params_under_test", context=ros_context)
    try:
        binding = ConfigParameters(node, InferenceNodeConfig)
        result = node.set_parameters([Parameter(name, value=value)])[0]
        assert not result.successful and re.search(message, result.reason), result.reason
        assert getattr(binding.config, name) == getattr(InferenceNodeConfig(), name)
    finally:
        node.destroy_node()


def test_bad_values_at_start_are_a_startup_error_naming_the_node(ros_context):
    """run_node prints a NodeStartupError and exits 1, without a traceback."""
    node = Node("params_under_test", context=ros_context, parameter_overrides=[Parameter("threads", value="two")])
    try:
        with pytest.raises(NodeStartupError, match="params_under_test: bad parameters: threads='two' must be an int"):
            ConfigParameters(node, InferenceNodeConfig)
    finally:
        node.destroy_node()


def test_yaml_holds_every_field_of_every_node():
    params = load_node_parameters(default_config_path())
    assert set(params) == set(CONFIGS)
    for name, cls in CONFIGS.items():
        assert set(params[name]) == {f.name for f in fields(cls)}, name


def test_graph_takes_image_size_from_the_checkpoint_and_validates(tiny_checkpoint):
    nodes = {d.name: d for d in describe_graph(model_path=str(tiny_checkpoint), rate=5,
                                               overrides={"sag_sim": {"max_steps": 7}})}
    assert set(nodes) == {"sag_camera", "sag_inference", "sag_sim"}
    assert nodes["sag_camera"].parameters["image_size"] == 32
    # the sim steps at the rate, so the chunks' actions are spaced at it too
    assert nodes["sag_inference"].parameters["control_rate_hz"] == nodes["sag_sim"].parameters["control_rate_hz"] == 5.0
    assert nodes["sag_inference"].parameters["action_rate_hz"] == 5.0
    assert nodes["sag_sim"].parameters["max_steps"] == 7
    assert ("image_raw", "sag/sim/image") in nodes["sag_camera"].remappings
    assert nodes["sag_inference"].parameters["hold_x0"] == ""  # the pruner's own setting unless told
    held = {d.name: d for d in describe_graph(model_path=str(tiny_checkpoint), hold_x0="off")}
    assert held["sag_inference"].parameters["hold_x0"] == "off"
    assert nodes["sag_inference"].parameters["interval"] == 0
    interval = {d.name: d for d in describe_graph(model_path=str(tiny_checkpoint), interval=(5, 50),
                                                  pruner_path=default_pruner_for("", with_interval=True))}
    assert [interval["sag_inference"].parameters[name] for name in ("interval", "interval_start", "pruner_path")] \
        == [5, 50, ""]  # bringup's default pruner gives way to the interval schedule
    assert nodes["sag_inference"].parameters["trigger"] == "frame"  # the parameter file's
    timer = {d.name: d for d in describe_graph(model_path=str(tiny_checkpoint), trigger="timer")}
    assert timer["sag_inference"].parameters["trigger"] == "timer"
    with pytest.raises(ValueError, match="trigger='tick' must be one of"):
        describe_graph(model_path=str(tiny_checkpoint), trigger="tick")
    assert [d.name for d in describe_graph(model_path=str(tiny_checkpoint), use_sim=False)] == ["sag_camera",
                                                                                              "sag_inference"]
    with pytest.raises(ValueError, match="unknown parameters"):
        describe_graph(overrides={"sag_sim": {"max_step": 7}})
    with pytest.raises(ValueError, match="num_episodes"):
        describe_graph(overrides={"sag_sim": {"num_episodes": 0}})


def test_graph_takes_the_action_range_from_the_policy_task(tiny_checkpoint, tmp_path):
    task = get_task("pusht")  # the tiny checkpoint's task, and the node's default
    assert (InferenceNodeConfig().action_min, InferenceNodeConfig().action_max) == (list(task.action_low),
                                                                                    list(task.action_high))
    params = load_node_parameters(default_config_path())
    params["sag_inference"]["action_min"] = [1.0, 1.0]  # a parameter file the task's range overrides
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump({name: {"ros__parameters": values} for name, values in params.items()}))
    inference = {d.name: d for d in describe_graph(path, model_path=str(tiny_checkpoint))}["sag_inference"]
    assert (inference.parameters["action_min"], inference.parameters["action_max"]) == ([0.0, 0.0], [512.0, 512.0])
    narrowed = {d.name: d for d in describe_graph(path, model_path=str(tiny_checkpoint),
                                                  overrides={"sag_inference": {"action_max": [100.0, 100.0]}})}
    assert (narrowed["sag_inference"].parameters["action_min"],
            narrowed["sag_inference"].parameters["action_max"]) == ([0.0, 0.0], [100.0, 100.0])


def test_a_meta_world_checkpoint_brings_up_a_meta_world_graph(tmp_path):
    from conftest import tiny_config
    from sag_ros.policy.checkpoint import save_policy
    from sag_ros.policy.policy import DiffusionPolicy

    task = get_task("mw-drawer-open")
    config = tiny_config()
    config.task = task.name
    config.denoiser.action_dim = task.action_dim
    config.encoder.state_dim = task.state_dim
    policy = DiffusionPolicy(config).eval()
    corners = np.array([[-1.0] * 4, [1.0] * 4])
    policy.normalizer.fit({"action": corners, "state": corners})
    save_policy(policy, tmp_path / "mw.pt", data_hash="test")
    nodes = {d.name: d.parameters for d in describe_graph(model_path=str(tmp_path / "mw.pt"))}
    assert nodes["sag_sim"]["task"] == "mw-drawer-open"
    assert nodes["sag_sim"]["joint_names"] == nodes["sag_inference"]["joint_names"] == list(task.joint_names)
    assert nodes["sag_sim"]["frame_id"] == nodes["sag_inference"]["frame_id"] == "mw-drawer-open"
    assert (nodes["sag_inference"]["action_min"], nodes["sag_inference"]["action_max"]) == ([-1.0] * 4, [1.0] * 4)
    assert nodes["sag_camera"]["state_dim"] == task.state_dim


def test_launch_file_builds_the_same_graph(tiny_checkpoint, monkeypatch):
    """The launch file's nodes are describe_graph's, argument for argument (launch_ros's Node is replaced by a
    recorder of its keyword arguments: what is checked is the file's wiring, not launch_ros)."""
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI here")
    import importlib.util

    from launch import LaunchContext

    path = default_config_path().parent.parent / "launch" / "bringup.launch.py"
    spec = importlib.util.spec_from_file_location("bringup_launch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declared = {entity.name for entity in module.generate_launch_description().entities if hasattr(entity, "name")}
    assert declared == set(module.ARGUMENTS)
    context = LaunchContext()
    context.launch_configurations.update({name: default for name, (default, _) in module.ARGUMENTS.items()})
    context.launch_configurations.update(model_path=str(tiny_checkpoint), rate="5.0", namespace="robot1")
    monkeypatch.setattr(module, "Node", lambda **kwargs: kwargs)
    expected = describe_graph(model_path=str(tiny_checkpoint), pruner_path=default_pruner_for(str(tiny_checkpoint)),
                              rate=5.0, use_sim=True)
    assert [(n["executable"], n["name"], n["parameters"], n["remappings"]) for n in module._nodes(context)] == [
        (d.executable, d.name, [dict(d.parameters)], list(d.remappings)) for d in expected]
    assert {n["namespace"] for n in module._nodes(context)} == {"robot1"}


def test_noise_scale_reaches_the_sampler_and_a_negative_one_is_refused(tiny_checkpoint):
    from sag_ros.nodes.inference_node import load_predictor

    plain = load_predictor(InferenceNodeConfig(model_path=str(tiny_checkpoint))).policy.schedule
    half = load_predictor(InferenceNodeConfig(model_path=str(tiny_checkpoint), noise_scale=0.5)).policy.schedule
    torch.testing.assert_close(half.coef_noise, plain.coef_noise * 0.5)
    with pytest.raises(ValueError, match=r"noise_scale=-0.5 must be a number >= 0"):
        InferenceNodeConfig(noise_scale=-0.5)
