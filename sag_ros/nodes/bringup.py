"""``sag-bringup``: the graph of ``launch/bringup.launch.py`` in one process, with rclpy alone.

The camera and inference nodes share one :class:`ObservationBuffer` (no serialization between them);
one single-threaded executor spins all nodes (:func:`graph_executor` says why). Live latency is printed every
``--print-period`` seconds and the final score when the simulator has finished its episodes; SIGINT stops
everything cleanly.

    sag-bringup --model-path policy.pt [--rate 10] [--episodes 1] [--max-steps 300] [--no-sim]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Callable, Sequence

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter

from sag_ros.arguments import interval_schedule
from sag_ros.nodes.camera_node import CameraNode, ObservationBuffer
from sag_ros.nodes.graph import (CAMERA, INFERENCE, SIM, NodeDescription, describe_graph, node_overrides,
                                 parse_node_parameter)
from sag_ros.nodes.inference_node import InferenceNode
from sag_ros.nodes.lifecycle import NodeStartupError
from sag_ros.nodes.params import TRIGGERS
from sag_ros.nodes.sim_node import SimNode
from sag_ros.resources import default_pruner_for


def _node_kwargs(description: NodeDescription, context) -> dict:
    return {"context": context, "cli_args": description.cli_args(),
            "parameter_overrides": [Parameter(k, value=v) for k, v in description.parameters.items()]}


def build_nodes(descriptions: Sequence[NodeDescription], context=None, predictor=None) -> dict[str, Node]:
    """Instantiate the described nodes in this process; camera and inference share one buffer.

    On failure, the nodes already built are destroyed before the exception propagates.
    """
    by_name = {d.name: d for d in descriptions}
    nodes: dict[str, Node] = {}
    try:
        buffer = None
        if CAMERA in by_name:
            cam = by_name[CAMERA].parameters
            buffer = ObservationBuffer(cam["n_obs_steps"], cam["image_size"], cam["state_dim"])
            nodes[CAMERA] = CameraNode(buffer, **_node_kwargs(by_name[CAMERA], context))
        if INFERENCE in by_name:
            nodes[INFERENCE] = InferenceNode(buffer, predictor, **_node_kwargs(by_name[INFERENCE], context))
        if SIM in by_name:
            nodes[SIM] = SimNode(**_node_kwargs(by_name[SIM], context))
    except BaseException:
        for node in nodes.values():
            node.destroy_node()
        raise
    return nodes


def graph_executor(context=None) -> SingleThreadedExecutor:
    """The executor that spins the graph's nodes in one process: a single thread, on purpose.

    Every callback of these nodes is short (the denoiser runs on the inference node's own worker thread), so one
    thread serves them all. Jazzy's MultiThreadedExecutor does not keep up: it hands a ready callback to its pool
    and, until a pool thread has started it, finds the same callback ready again and returns at once, a loop that
    holds the GIL and starves the pool (ros2/rclpy#1452). Measured on a 2-core machine (stop 43), a bare 10 Hz timer
    ticked 14-31 times in 10 s under it, and this graph fell to 5.7-7.8 chunks a second from frames 50-110 ms old;
    spun by one thread, 9.9 chunks a second from frames 3.5 ms old. After ``spin_once`` returns no callback is
    in flight, so shutting the executor down needs no joining of worker threads."""
    return SingleThreadedExecutor(context=context)


def spin_once(executor: Executor, timeout_sec: float) -> None:
    """``executor.spin_once``, where a shut-down context (SIGINT), before or during the call, always reads as
    :class:`ExternalShutdownException`.

    The executor checks its context while it waits, but a shutdown that lands just before it creates its wait timer
    makes rclpy raise ``RCLError`` ("the given context is not valid") instead: a traceback and exit code 1 on
    Ctrl-C, seen once in CI."""
    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except _rclpy.RCLError:
        if executor.context.ok():
            raise
        raise ExternalShutdownException() from None


def stop_graph(executor, nodes: dict[str, Node], log: Callable[[str], None]) -> None:
    """Stop the executor, then every node; an error stopping one node is logged and the others still stop."""
    if executor is not None:
        executor.shutdown()
    for node in nodes.values():
        try:
            node.destroy_node()
        except Exception as exc:  # keep stopping the others; the process still exits
            log(f"{node.get_name()}: error while stopping: {exc!r}")


def latency_line(node: InferenceNode) -> str:
    level, message, v = node.health()
    return (f"[sag-bringup] {level.name:5s} chunks {v['chunks']:4d}  total p50 {v['p50_ms']:6.1f} ms  "
            f"p95 {v['p95_ms']:6.1f} ms  p99 {v['p99_ms']:6.1f} ms  rate {v['achieved_rate_hz']:5.2f}/"
            f"{v['target_rate_hz']:.1f} Hz  misses {v['deadline_misses']}  obs age {v['obs_age_p50_ms']:5.1f} ms"
            + ("" if level.name == "OK" else f"  ({message})"))


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="sag-bringup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="parameter file (default: config/sag_nodes.yaml)")
    parser.add_argument("--model-path", default="", help="policy checkpoint (default: the shipped policy)")
    parser.add_argument("--pruner-path", default=None,
                        help="SAG pruner; 'none' = dense (default: the shipped pruner with the shipped policy)")
    parser.add_argument("--backend", default="", help="inference backend (default: from the config)")
    parser.add_argument("--hold-x0", default="", choices=("on", "off"),
                        help="steps the pruner skips wholly keep the last computed clean-chunk prediction (on) or "
                             "reuse cached block outputs (off) (default: from the config: the pruner's own)")
    parser.add_argument("--interval", type=interval_schedule, default=None, metavar="N[@START]",
                        help="interval caching instead of a pruner: every N-th denoising step computes (from step "
                             "START on, e.g. 5@50; step 0 always) (default: off)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="control rate in Hz: the sim's steps, the chunks and their actions' spacing (default: "
                             "the config's chunk rate, the task's step rate)")
    parser.add_argument("--trigger", default="", choices=TRIGGERS,
                        help="what starts a chunk: a fixed-rate timer, or each new frame at most at the control rate "
                             "(default: from the config)")
    parser.add_argument("--no-sim", dest="use_sim", action="store_false", help="do not start the Push-T simulator")
    parser.add_argument("--episodes", type=int, default=0, help="episodes to run (default: from the config)")
    parser.add_argument("--max-steps", type=int, default=-1, help="steps per episode (default: from the config)")
    parser.add_argument("--seed", type=int, default=-1, help="seed of the first episode (default: from the config)")
    parser.add_argument("--param", action="append", default=[], metavar="NODE.NAME=VALUE",
                        help="set one node parameter on top of the file, e.g. sag_inference.execution_offset_s=0.0125 "
                             "(repeatable; the options above win)")
    parser.add_argument("--print-period", type=float, default=1.0, help="seconds between latency lines")
    return parser.parse_args(argv)


def _overrides(args: argparse.Namespace) -> dict:
    """``--param`` settings, then the sim's own options on top."""
    overrides = node_overrides(parse_node_parameter(text) for text in args.param)
    sim = {}
    if args.episodes > 0:
        sim["num_episodes"] = args.episodes
    if args.max_steps >= 0:
        sim["max_steps"] = args.max_steps
    if args.seed >= 0:
        sim["seed"] = args.seed
    if sim:
        overrides.setdefault(SIM, {}).update(sim)
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
    pruner = args.pruner_path if args.pruner_path is not None else default_pruner_for(args.model_path,
                                                                                      args.interval is not None)
    try:
        descriptions = describe_graph(args.config, model_path=args.model_path, pruner_path=pruner,
                                      backend=args.backend, hold_x0=args.hold_x0, interval=args.interval,
                                      rate=args.rate, trigger=args.trigger, use_sim=args.use_sim,
                                      overrides=_overrides(args))
    except (ValueError, OSError) as exc:  # a parameter the nodes' configs refuse, an unreadable parameter file
        print(f"sag-bringup: {exc}", file=sys.stderr)
        return 2
    rclpy.init(args=argv)
    nodes: dict[str, Node] = {}
    executor = None
    code = 0
    try:
        nodes = build_nodes(descriptions)
        executor = graph_executor()
        for node in nodes.values():
            executor.add_node(node)
        sim = nodes.get(SIM)
        next_print = time.monotonic() + args.print_period
        print(f"[sag-bringup] running {', '.join(nodes)}", flush=True)
        while not (sim is not None and sim.finished.done()):  # until the sim is done or the context is shut down:
            spin_once(executor, timeout_sec=0.1)  # then this raises ExternalShutdownException
            if time.monotonic() >= next_print:
                print(latency_line(nodes[INFERENCE]), flush=True)
                next_print += args.print_period
        if sim is not None and sim.summary is not None:
            s = sim.summary
            print(f"[sag-bringup] final: {s['episodes']} episodes, mean score {s['mean_score']:.3f}, "
                  f"success rate {s['success_rate']:.2f}", flush=True)
            print(json.dumps(s), flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        print("[sag-bringup] interrupted", flush=True)
    except NodeStartupError as exc:  # a missing or mismatched model, parameters a node refuses
        print(exc, file=sys.stderr)
        code = 1
    finally:
        stop_graph(executor, nodes, lambda line: print(f"[sag-bringup] {line}", file=sys.stderr))
        rclpy.try_shutdown()
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    print(f"[sag-bringup] stopped; threads left: {len(others)} {others}", flush=True)
    return code


def entry_point() -> None:
    raise SystemExit(main())


if __name__ == "__main__":
    entry_point()
