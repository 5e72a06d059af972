"""Launch the sag_ros graph (camera + inference [+ Push-T sim]) as separate processes.

    ros2 launch sag_ros bringup.launch.py model_path:=/path/policy.pt pruner_path:=none rate:=10.0 use_sim:=true
    ros2 launch sag_ros bringup.launch.py use_sim:=false params_file:=/path/my_robot.yaml
    ros2 launch sag_ros bringup.launch.py namespace:=robot1   # /robot1/sag/actions, /robot1/sag_inference, ...

Thin: the nodes, their parameters and remappings come from ``sag_ros.nodes.graph`` (shared with
``sag-bringup``); launch and launch_ros are imported only here.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sag_ros.arguments import interval_schedule
from sag_ros.nodes.graph import describe_graph
from sag_ros.resources import default_pruner_for

ARGUMENTS = {
    "params_file": ("", "node parameter file (a copy of config/sag_nodes.yaml); empty = the installed one"),
    "model_path": ("", "policy checkpoint; empty = the shipped default policy"),
    "pruner_path": ("", "SAG pruner for the policy; empty = the shipped one with the shipped policy; 'none' = dense"),
    "backend": ("", "inference backend; empty = config/sag_nodes.yaml"),
    "hold_x0": ("", "on / off: steps the pruner skips wholly keep the last clean-chunk prediction; empty = config"),
    "interval": ("0", "interval caching instead of a pruner: n (every n-th denoising step computes) or n@start "
                      "(every n-th from step start, e.g. 5@50); 0 = off"),
    "rate": ("0.0", "control rate in Hz: the sim's steps, the chunks and their actions' spacing; 0 = "
                    "config/sag_nodes.yaml's chunk rate, the task's step rate"),
    "trigger": ("", "timer / frame: what starts a chunk (a fixed-rate timer, or each new frame at most at the rate); "
                "empty = config"),
    "use_sim": ("true", "start the Push-T simulator and wire the camera to it"),
    "namespace": ("", "namespace of every node and topic (e.g. robot1: /robot1/sag/actions); empty = none"),
}


def _nodes(context):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    interval = None if value["interval"].strip() in ("", "0") else interval_schedule(value["interval"])
    descriptions = describe_graph(value["params_file"] or None, model_path=value["model_path"],
                                  pruner_path=value["pruner_path"]
                                  or default_pruner_for(value["model_path"], interval is not None),
                                  backend=value["backend"], hold_x0=value["hold_x0"], interval=interval,
                                  rate=float(value["rate"] or 0.0), trigger=value["trigger"],
                                  use_sim=value["use_sim"].strip().lower() in ("1", "true", "yes", "on"))
    return [Node(package="sag_ros", executable=d.executable, name=d.name, namespace=value["namespace"] or None,
                 parameters=[dict(d.parameters)], remappings=list(d.remappings), output="screen")
            for d in descriptions]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in ARGUMENTS.items()]
        + [OpaqueFunction(function=_nodes)])
