"""``sag bench-ros``: dense vs SAG in the closed loop over real ROS 2, one method after the other.

For each method the graph of ``sag-bringup`` (camera + inference + the policy task's sim, one process, DDS on loopback)
is built in a fresh rclpy Context, spun by its single-threaded executor until the sim has run its episodes from the
same seeds at the same rate, then torn down. Per method it reports what the inference node measured on every
chunk of the run (its statistics window is widened to hold them all):

- achieved chunk rate (Hz) against the target rate;
- observation-to-action latency p50/p95/p99: the observation's age when the tick took it + the chunk's total
  compute (paired per chunk), and the compute alone;
- deadline misses (compute > control period), overruns (ticks that found the worker busy), stale ticks;
- the executed-block fraction (1.0 dense; the SAG mask's computed share);
- the task's mean score and success rate from the sim's summary.

Every chunk's observation-to-action time is kept in the report (``obs_to_action_samples_ms``) and plotted as a
distribution against the period: ``sag eval --latency-from REPORT.json::METHOD`` replays the graph with each
chunk's latency drawn from them (:mod:`sag_ros.nodes.replay`).

    sag bench-ros [--policy P] --pruner sag=models/pusht_image_long7_sag_rho0.9_step_held_from5at50.pt [--episodes 3] [--rate 10]
                  [--json J.json] [--plot J.png]
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sag_ros.tables import format_table

DENSE = "none"
STATS_WINDOW = 100_000  # every chunk of a benchmark run (2.7 h at 10 Hz) stays in the inference node's windows


@dataclass(frozen=True)
class RosMethod:
    """One row of the benchmark: a pruner file ('none' = dense) on a block backend."""

    name: str
    pruner_path: str = DENSE
    backend: str = "eager"


def ros_methods(pruners: dict[str, str], backends: Sequence[str] = ("eager",)) -> list[RosMethod]:
    """Dense and each named pruner on every backend; the first method (dense on the first backend) is the reference."""
    methods = []
    for i, backend in enumerate(backends):
        suffix = "" if i == 0 else f" [{backend}]"
        methods.append(RosMethod(f"dense{suffix}", DENSE, backend))
        methods += [RosMethod(f"{name}{suffix}", path, backend) for name, path in pruners.items()]
    return methods


def _percentiles(values_s: np.ndarray) -> dict[str, float]:
    if not len(values_s):
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    p50, p95, p99 = np.percentile(values_s * 1e3, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "max_ms": float(values_s.max() * 1e3)}


def collect_stats(node) -> dict:
    """What one inference node measured over its whole run (all chunks are in its windows)."""
    _, message, health = node.health()
    with node._lock:  # the worker adds to every window under this lock, chunk by chunk
        total = node.stats.total.values()
        obs_age = node.stats.obs_age.values()
        fraction = node.stats.fraction.values()
        rate = node.stats.rate.rate()
    n = min(len(total), len(obs_age))
    obs_to_action = obs_age[-n:] + total[-n:]  # paired per chunk: both windows are filled together
    period_s = node.params.config.period_s
    return {
        "chunks": int(health["chunks"]), "target_rate_hz": float(health["target_rate_hz"]),
        "achieved_rate_hz": float(rate), "period_ms": period_s * 1e3,
        "obs_to_action": _percentiles(obs_to_action), "compute": _percentiles(total),
        "obs_to_action_samples_ms": np.round(obs_to_action * 1e3, 3).tolist(),  # what `sag eval --latency-from` draws
        "obs_age": _percentiles(obs_age),
        "deadline_misses": int(np.count_nonzero(total > period_s)),
        "obs_to_action_misses": int(np.count_nonzero(obs_to_action > period_s)),
        "overruns": int(health["overruns"]), "stale_ticks": int(health["stale_ticks"]),
        "refused_chunks": int(health["refused_chunks"]), "failures": int(health["failures"]),
        "executed_fraction": float(np.mean(fraction)) if len(fraction) else float("nan"),
        "plan_p50_ms": float(health["plan_p50_ms"]), "denoise_p50_ms": float(health["denoise_p50_ms"]),
        "last_message": message,
    }


def run_method(method: RosMethod, policy_path: str, *, episodes: int, seed: int, rate: float, max_steps: int,
               config_path: str | None = None, timeout_s: float | None = None, threads: int = 1,
               domain_id: int | None = None, log=print) -> dict:
    """One method's closed-loop run over ROS in a fresh Context; returns its row of the report."""
    import rclpy
    from rclpy.context import Context

    from sag_ros.nodes.bringup import build_nodes, graph_executor, spin_once, stop_graph
    from sag_ros.nodes.graph import INFERENCE, SIM, describe_graph

    inference = {"stats_window": STATS_WINDOW, "threads": threads}  # sampler: the pruner's, else the checkpoint's
    sim = {"num_episodes": episodes, "seed": seed}
    if max_steps > 0:
        sim["max_steps"] = max_steps
    descriptions = describe_graph(config_path, model_path=policy_path, pruner_path=method.pruner_path,
                                  backend=method.backend, rate=rate, overrides={INFERENCE: inference, SIM: sim})
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    nodes: dict = {}
    executor = None
    try:
        t_build = time.monotonic()
        nodes = build_nodes(descriptions, context)
        build_s = time.monotonic() - t_build
        sim_node = nodes[SIM]
        if timeout_s is None:  # generous: every step at the set rate, three times over, plus start-up
            steps = max_steps if max_steps > 0 else sim_node.max_steps
            timeout_s = 30.0 + 3.0 * episodes * (steps + 1) / sim_node.rate_hz
        executor = graph_executor(context)
        for node in nodes.values():
            executor.add_node(node)
        log(f"[bench-ros] {method.name}: running {episodes} episode(s) at {sim_node.rate_hz:g} Hz "
            f"(model ready in {build_s:.1f} s)")
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while context.ok() and not sim_node.finished.done() and time.monotonic() < deadline:
            spin_once(executor, timeout_sec=0.05)
        wall_s = time.monotonic() - t0
        if not sim_node.finished.done():
            raise TimeoutError(f"{method.name}: the sim did not finish {episodes} episode(s) in {timeout_s:.0f} s "
                               f"(results so far: {sim_node.results})")
        stats = collect_stats(nodes[INFERENCE])
        schedule = nodes[INFERENCE].predictor.policy.schedule  # what the node sampled with, as it chose it
        summary = sim_node.summary
        return {"method": method.name, "pruner": None if method.pruner_path == DENSE else method.pruner_path,
                "backend": method.backend, "sampler": schedule.kind.value,
                "num_steps": schedule.num_steps, "wall_s": wall_s, "model_ready_s": build_s,
                **stats, "sim_rate_hz": float(sim_node.rate_hz), "held_steps": int(sim_node.held_steps),
                "mean_score": float(summary["mean_score"]), "success_rate": float(summary["success_rate"]),
                "episodes": [dict(r) for r in sim_node.results]}
    finally:
        stop_graph(executor, nodes, lambda line: log(f"[bench-ros] {line}"))
        rclpy.try_shutdown(context=context)


def run_bench_ros(methods: Sequence[RosMethod], policy_path: str, *, episodes: int = 1, seed: int = 100_000,
                  rate: float = 0.0, max_steps: int = 0, config_path: str | None = None, threads: int = 1,
                  timeout_s: float | None = None, domain_id: int | None = None, log=print) -> dict:
    """Every method in turn over ROS, same seeds, same rate (0: the parameter file's chunk rate, the task's own
    step rate); returns the report (``methods``: name -> row)."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rows = {}
    for method in methods:
        rows[method.name] = run_method(method, policy_path, episodes=episodes, seed=seed, rate=rate,
                                       max_steps=max_steps, config_path=config_path, timeout_s=timeout_s,
                                       threads=threads, domain_id=domain_id, log=log)
    return {"policy": policy_path, "episodes": episodes, "seeds": [seed, seed + episodes], "rate_hz": rate,
            "max_steps": max_steps, "threads": threads,
            "discovery_range": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"),
            "methods_spec": [dataclasses.asdict(m) for m in methods], "methods": rows}


def format_ros_results(report: dict) -> str:
    rows = []
    for name, r in report["methods"].items():
        o2a = r["obs_to_action"]
        rows.append({"method": name, "backend": r["backend"],
                     "rate Hz": f"{r['achieved_rate_hz']:.2f}/{r['target_rate_hz']:.0f}",
                     "o2a p50 ms": f"{o2a['p50_ms']:.1f}", "o2a p95 ms": f"{o2a['p95_ms']:.1f}",
                     "o2a p99 ms": f"{o2a['p99_ms']:.1f}", "compute p50 ms": f"{r['compute']['p50_ms']:.1f}",
                     "misses": f"{r['deadline_misses']}/{r['chunks']}", "overruns": r["overruns"],
                     "blocks": f"{r['executed_fraction']:.3f}", "score": f"{r['mean_score']:.3f}",
                     "success": f"{r['success_rate']:.2f}"})
    return format_table(rows)


def measured_latencies(reference: str) -> tuple[float, ...]:
    """Every chunk's observation-to-action time (s) that a ``sag bench-ros`` report holds for a method
    (``'REPORT.json::METHOD'``): what a replay (``sag eval --latency-from``) draws each chunk's latency from."""
    path, _, method = reference.partition("::")
    if not method:
        raise ValueError(f"{reference!r}: name the method as REPORT.json::METHOD")
    try:
        rows = json.loads(Path(path).read_text())["methods"]
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{path}: not a `sag bench-ros` report") from None
    if method not in rows:
        raise ValueError(f"{path}: no method {method!r}; it has {sorted(rows)}")
    samples = rows[method].get("obs_to_action_samples_ms")
    if not samples:
        raise ValueError(f"{path}: {method!r} has no per-chunk latencies (reports record them since stop 45; "
                         "rerun `sag bench-ros`)")
    return tuple(sample / 1e3 for sample in samples)


def plot_ros_latencies(report: dict, path: Path) -> None:
    """Each method's observation-to-action latency over every chunk of its run, as a distribution (the share of
    chunks at or below each latency) against the control period: where its deadline misses come from."""
    from sag_ros.benchmark import _pyplot, _save_figure

    fig, ax = _pyplot().subplots(figsize=(7.0, 4.0))
    periods = set()
    for name, row in report["methods"].items():
        samples = np.sort(row.get("obs_to_action_samples_ms", []))
        if not len(samples):
            continue
        ax.step(samples, np.arange(1, len(samples) + 1) / len(samples), where="post",
                label=f"{name}: p50 {row['obs_to_action']['p50_ms']:.0f} ms, score {row['mean_score']:.3f}")
        periods.add(row["period_ms"])
    for period in periods:
        ax.axvline(period, color="black", linestyle=":", linewidth=1)
        ax.annotate(f"period {period:g} ms", (period, 0.02), rotation=90, ha="right", fontsize=8)
    ax.set_xlabel("observation-to-action latency (ms): frame age + chunk compute")
    ax.set_ylabel("share of chunks at or below")
    ax.set_title(f"closed loop over ROS 2, {Path(report['policy']).name}, {report['episodes']} episode(s) a method",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save_figure(fig, path)


def save_ros_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
