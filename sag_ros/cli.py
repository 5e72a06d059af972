"""`sag`: the command line of the project (datagen, train, eval, train-pruner, bench).

Each subcommand parses arguments, wires the layers together and prints a result; the work itself lives in
the layer modules. Heavy imports happen inside the subcommands so ``sag --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sag_ros.arguments import interval_schedule
from sag_ros.resources import default_policy_path
from sag_ros.tables import format_table

if TYPE_CHECKING:
    from sag_ros.policy.policy import DiffusionPolicy, Observation
    from sag_ros.sim.task import TaskSpec

BACKEND_NAMES = ("eager", "compile", "onnxruntime", "tensorrt")  # sag_ros.engine.BACKENDS, without importing torch
GRANULARITIES = ("block", "step", "hierarchical")  # sag_ros.sparse.pruner.GRANULARITIES, likewise


def _datagen(args: argparse.Namespace) -> None:
    from sag_ros.sim.datagen import datagen_main

    datagen_main(args.task, args.episodes, args.seed, Path(args.out), args.workers)


def _render(args: argparse.Namespace) -> None:
    from sag_ros.policy.data import hash_file
    from sag_ros.sim.dataset import load_demos
    from sag_ros.sim.image_cache import demo_images, image_cache_path
    from sag_ros.sim.task import get_task

    data_path = Path(args.data)
    demos = load_demos(data_path)
    images = demo_images(demos, get_task(demos.metadata["task"]), data_path, hash_file(data_path))
    print(f"{len(images)} images of {demos.metadata['task']!r} in {image_cache_path(data_path)}")


def training_sampler(policy_config, data_path: Path):
    """Demonstrations -> a window sampler holding exactly what the policy reads (images re-rendered, or read from
    their cache beside the demo file)."""
    from sag_ros.policy.config import EncoderKind
    from sag_ros.policy.data import WindowSampler, hash_file
    from sag_ros.sim.dataset import load_demos
    from sag_ros.sim.image_cache import demo_images
    from sag_ros.sim.task import get_task

    demos, data_hash = load_demos(data_path), hash_file(data_path)
    task_name = demos.metadata.get("task")
    if task_name != policy_config.task:
        raise SystemExit(f"{data_path} holds {task_name!r} demonstrations, the config trains {policy_config.task!r}")
    arrays = {"action": demos.action}
    if policy_config.encoder.kind is EncoderKind.LOWDIM:
        arrays["keypoints"] = demos.keypoints
    else:
        arrays["state"] = demos.state
        arrays["image"] = demo_images(demos, get_task(task_name), data_path, data_hash)
    d = policy_config.denoiser
    return WindowSampler(arrays, demos.episode_ends, d.n_obs_steps, d.horizon, d.n_action_steps, data_hash)


def policy_and_windows(policy_path: Path, data_path: Path, count: int,
                       seed: int) -> tuple[DiffusionPolicy, Observation]:
    """A checkpoint's policy (eval mode) and the observations of ``count`` demonstration windows drawn with
    ``seed``: what the open-loop studies in ``tools/`` run samplers on."""
    import torch

    from sag_ros.policy.checkpoint import load_policy

    policy, _ = load_policy(policy_path)
    obs, _ = training_sampler(policy.config, data_path).sample(count, torch.Generator().manual_seed(seed))
    return policy.eval(), obs


def _train(args: argparse.Namespace) -> None:
    import dataclasses

    from sag_ros.config import load_experiment
    from sag_ros.policy.device import resolve_device
    from sag_ros.policy.train import Deadline, train_policy

    device, deadline = resolve_device(args.device), Deadline(args.max_minutes)
    experiment = load_experiment(Path(args.config))
    train_config = experiment.train
    if args.steps is not None:
        train_config = dataclasses.replace(train_config, num_steps=args.steps)
    sampler = training_sampler(experiment.policy, Path(args.data))
    train_policy(experiment.policy, train_config, sampler, Path(args.out),
                 init_from=Path(args.init) if args.init else None, device=device, deadline=deadline)


def _policy_task(policy_task: str, requested: str | None):
    """The task a command runs: the policy's own unless ``--task`` names one, which must then be the same."""
    from sag_ros.sim.task import get_task

    if requested is not None and requested != policy_task:
        raise SystemExit(f"the policy was trained on {policy_task!r}; it cannot run --task {requested!r}")
    return get_task(policy_task)


def _test_seeds(task: TaskSpec, seed_start: int | None, episodes: int) -> range:
    """Env seeds of an evaluation: ``episodes`` from ``seed_start`` (default: the task's first test seed). Seeds
    below the test seeds are the demonstrations' layouts, on which a score says nothing about the policy."""
    start = task.test_seed_start if seed_start is None else seed_start
    if start < task.test_seed_start:
        raise SystemExit(f"--seed-start {start} is below {task.name}'s test seeds (>= {task.test_seed_start}): "
                         "those layouts are where the demonstrations come from")
    return range(start, start + episodes)


def _eval(args: argparse.Namespace) -> None:
    import dataclasses

    from sag_ros.predictor import PredictorSpec
    from sag_ros.sim.evaluate import evaluate, rollout, summarize
    from sag_ros.sparse.mask import interval_label

    replayed = args.latency_ms is not None or args.latency_from is not None
    if (args.params_file or args.param) and not replayed:
        raise SystemExit("--params-file and --param are the replayed graph's: they need --latency-ms or "
                         "--latency-from")
    replay = None  # the graph's timing, read first: its files fail fast
    if replayed:
        from sag_ros.nodes.bench_ros import measured_latencies
        from sag_ros.nodes.graph import default_config_path, node_overrides
        from sag_ros.nodes.replay import GraphReplay, GraphTiming

        params_file = Path(args.params_file) if args.params_file else default_config_path()
        latency = args.latency_ms / 1e3 if args.latency_from is None else measured_latencies(args.latency_from)
        timing = GraphTiming.from_parameter_file(params_file, latency, node_overrides(args.param))
        replay = GraphReplay(timing)
    policy_path = Path(args.policy) if args.policy else default_policy_path()
    interval, interval_start = args.interval or (None, 0)
    spec = PredictorSpec(str(policy_path), sampler=args.sampler, num_steps=args.steps, noise_scale=args.noise_scale,
                         pruner_path=args.pruner, interval=interval, interval_start=interval_start,
                         hold_x0=args.hold_x0, backend=args.backend, threads=args.threads)
    policy = spec().policy  # fails fast, here, on a missing or mismatched checkpoint
    schedule = policy.schedule
    task = _policy_task(policy.config.task, args.task)
    seeds = _test_seeds(task, args.seed_start, args.episodes)
    results = evaluate(spec, task.name, seeds, workers=args.workers, noise_seed=args.noise_seed,
                       video_dir=Path(args.video_dir) if args.videos else None, num_videos=args.videos,
                       runner=replay or rollout)
    summary = summarize(results)
    if replay:
        summary["held_steps"] = sum(r.held_steps for r in results)
    blocks = Path(args.pruner).name if args.pruner else "-"
    if args.interval:
        blocks = f"interval {interval_label(*args.interval)}"
    if args.hold_x0:
        blocks += ", hold-x0"
    sampler = f"{schedule.kind.value}-{schedule.num_steps}"
    if args.noise_scale != 1:
        sampler += f" noise x{args.noise_scale:g}"
    print(format_table([{"policy": policy_path.name, "sampler": sampler,
                         "blocks": blocks, **summary}]))
    if args.json:
        report = {"policy": str(policy_path), "pruner": args.pruner, "interval": args.interval,
                  "hold_x0": args.hold_x0, "task": task.name,
                  "sampler": schedule.kind.value, "steps": schedule.num_steps, "noise_scale": args.noise_scale,
                  "backend": args.backend, "graph_timing": dataclasses.asdict(replay.timing) if replay else None,
                  "seeds": [seeds.start, seeds.stop], "noise_seed": args.noise_seed, "summary": summary,
                  "episodes": [vars(r) for r in results]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


def _pack(args: argparse.Namespace) -> None:
    from sag_ros.policy.checkpoint import load_policy, save_policy

    policy, meta = load_policy(Path(args.policy))
    save_policy(policy, Path(args.out), data_hash=meta["data_hash"], half=True, extra=meta["extra"])
    load_policy(Path(args.out))  # it must load back
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB, fp16 weights)")


def _train_pruner(args: argparse.Namespace) -> None:
    from sag_ros.policy.checkpoint import load_policy
    from sag_ros.policy.device import resolve_device
    from sag_ros.policy.train import Deadline
    from sag_ros.sparse.train_pruner import PrunerTrainConfig, train_pruner

    device, deadline = resolve_device(args.device), Deadline(args.max_minutes)
    policy, _ = load_policy(Path(args.policy))
    policy.use_sampler(args.sampler, args.steps)
    init_interval, init_interval_start = args.init_interval or (None, 0)
    cfg = PrunerTrainConfig(target_rate=args.rho, sparsity_weight=args.sparsity_weight, num_steps=args.iterations,
                            batch_size=args.batch_size, lr=args.lr, cell_lr=args.cell_lr, rate_warmup=args.rate_warmup,
                            reuse=args.reuse, reference=args.reference, fidelity_window=args.fidelity_window,
                            fidelity_steps=args.fidelity_steps, hold_x0=args.hold_x0,
                            step_cost=args.step_cost, noise_scale=args.noise_scale, use_observation=not args.static,
                            granularity=args.granularity,
                            step_budget=args.step_budget,
                            seed=args.seed, threads=args.threads, init_from=args.init, init_transfer=args.init_transfer,
                            init_interval=init_interval,
                            init_interval_start=init_interval_start)
    train_pruner(policy, cfg, training_sampler(policy.config, Path(args.data)), Path(args.out), device, deadline)


def _bench(args: argparse.Namespace) -> None:
    from sag_ros.benchmark import format_results, plot_results, run_benchmark, save_report, standard_methods
    from sag_ros.policy.checkpoint import load_policy

    pruners = _named_paths(args.pruner)
    policy_path = str(Path(args.policy) if args.policy else default_policy_path())
    methods = standard_methods(policy_path, pruners, intervals=tuple(args.intervals), ddim_steps=tuple(args.ddim),
                               backends=tuple(args.backends), interval_reuse=tuple(args.interval_reuse),
                               hold_x0=tuple(choice == "on" for choice in args.hold_x0) if args.hold_x0 else (None,))
    task = _policy_task(load_policy(Path(policy_path))[0].config.task, args.task)
    seeds = _test_seeds(task, args.seed_start, args.episodes)
    report = run_benchmark(methods, task.name, seeds, args.noise_seeds, args.workers,
                           args.latency_obs, args.repeats, args.threads)
    print(format_results(report))
    save_report(report, Path(args.json))
    plot_results(report, Path(args.plot))
    print(f"wrote {args.json} and {args.plot}")


def _paired(args: argparse.Namespace) -> None:
    from sag_ros.benchmark import compare_episodes, format_paired, paired_comparisons, plot_paired, pooled_method

    if (args.report is None) == (not args.pool) or len(args.pool) == 1:
        raise SystemExit("sag paired: give either one `sag bench` report or --pool NAME=RUN[,RUN...] for each of "
                         "two or more methods")
    try:
        rows = (paired_comparisons(json.loads(Path(args.report).read_text()), args.methods, args.component)
                if args.report
                else compare_episodes(dict(pooled_method(spec, args.component) for spec in args.pool)))
    except (KeyError, ValueError) as exc:
        raise SystemExit(exc.args[0]) from None
    except OSError as exc:
        raise SystemExit(f"sag paired: cannot read {exc.filename}: {exc.strerror}") from None
    if not rows:
        raise SystemExit(f"{args.report} has no per-episode results for two methods (a speed-only run, or older "
                         "than per-episode results)")
    print(format_paired(rows))
    if args.plot:
        plot_paired(rows, Path(args.plot))
        print(f"wrote {args.plot}")


def _bench_ros(args: argparse.Namespace) -> None:
    import os

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from sag_ros.nodes.bench_ros import (format_ros_results, plot_ros_latencies, ros_methods, run_bench_ros,
                                         save_ros_report)

    pruners = _named_paths(args.pruner)
    policy_path = str(Path(args.policy) if args.policy else default_policy_path())
    methods = ros_methods(pruners, backends=tuple(args.backend or ["eager"]))
    from sag_ros.nodes.inference_node import ModelLoadError

    try:
        report = run_bench_ros(methods, policy_path, episodes=args.episodes, seed=args.seed, rate=args.rate,
                               max_steps=args.max_steps, config_path=args.config, threads=args.threads)
    except (ModelLoadError, TimeoutError) as exc:
        raise SystemExit(str(exc)) from None
    print(format_ros_results(report))
    save_ros_report(report, Path(args.json))
    plot = Path(args.plot) if args.plot else Path(args.json).with_suffix(".png")
    plot_ros_latencies(report, plot)
    print(f"wrote {args.json} and {plot}")


def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (counts of episodes, steps, workers, threads)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= {minimum}")
        return value
    return parse


def _finite_float(allow_zero: bool):
    """An argparse type: a finite number > 0 (a rate), or >= 0 with ``allow_zero`` (a noise scale)."""
    bound = "a number >= 0" if allow_zero else "a positive number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: expected {bound}")
        return value

    return parse


_positive_float, _non_negative_float = _finite_float(False), _finite_float(True)


def _node_parameter_arg(text: str) -> tuple[str, str, object]:
    from sag_ros.nodes.graph import parse_node_parameter

    try:
        return parse_node_parameter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
_COUNT, _COUNT0 = _at_least(1), _at_least(0)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Where and for how long a resumable training command runs (not part of its recipe)."""
    p.add_argument("--device", default="cpu", help="torch device to train on: cpu, cuda or cuda:N")
    p.add_argument("--max-minutes", type=_positive_float, metavar="M",
                   help="stop at a checkpoint after M minutes; the same command resumes")


def _named_paths(items: list[str]) -> dict[str, str]:
    """``NAME=PATH`` arguments -> {name: path}; split at the last '=' (names may hold one, paths rarely do)."""
    pairs = [item.rsplit("=", 1) for item in items]
    bad = [item for item, pair in zip(items, pairs) if len(pair) != 2]
    if bad:
        raise SystemExit(f"expected NAME=PATH, got {bad}")
    return dict(pairs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sag", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("datagen", help="generate expert demonstrations")
    p.add_argument("--task", default="pusht")
    p.add_argument("--episodes", type=_COUNT, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--workers", type=_COUNT, default=2)
    p.set_defaults(func=_datagen)

    p = sub.add_parser("render", help="render a demo file's images into their cache beside it (training reads "
                                      "them there; carry both files to a machine without the simulators)")
    p.add_argument("--data", required=True)
    p.set_defaults(func=_render)

    p = sub.add_parser("train", help="train a dense Diffusion Policy (resumes from OUT if present)")
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=_COUNT, help="override train.num_steps")
    p.add_argument("--init", help="start from this policy checkpoint's weights (same config; fresh optimizer and "
                                  "schedule; ignored when OUT holds a run to resume)")
    _add_run_options(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="closed-loop evaluation; prints a table, optionally writes JSON and GIFs")
    p.add_argument("--policy", help="checkpoint (default: the shipped Push-T policy)")
    p.add_argument("--task", help="default: the policy's task")
    p.add_argument("--episodes", type=_COUNT, default=50)
    p.add_argument("--seed-start", type=int, help="first env seed (default: the task's first test seed)")
    p.add_argument("--noise-seed", type=int, default=0,
                   help="seeds the sampling noise as `sag bench` seeds its noise seed of this index, so that the "
                        "episodes pair with that bench run's")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], help="default: the pruner's, else the checkpoint's")
    p.add_argument("--steps", type=_COUNT, help="denoising steps (default: the pruner's, else the checkpoint's)")
    p.add_argument("--noise-scale", type=_non_negative_float, default=1.0,
                   help="multiply DDPM's fresh noise per step by this (below 1: a lower sampling temperature)")
    p.add_argument("--workers", type=_COUNT, default=2)
    p.add_argument("--threads", type=_COUNT, default=1, help="torch threads per worker")
    p.add_argument("--backend", default="eager", choices=BACKEND_NAMES)
    p.add_argument("--pruner", help="SAG pruner checkpoint (default: dense)")
    p.add_argument("--interval", type=interval_schedule, metavar="N[@START]",
                   help="interval caching instead: every N-th step computes every block (from step START on)")
    p.add_argument("--hold-x0", action=argparse.BooleanOptionalAction, default=None,
                   help="steps whose every block is pruned hold the last computed clean-chunk prediction (default: "
                        "the pruner's training setting; off for --interval)")
    latency = p.add_mutually_exclusive_group()
    latency.add_argument("--latency-ms", type=_non_negative_float, metavar="MS",
                         help="replay the deployed graph's timing instead of lockstep: the sim ticks on, chunks start "
                              "from frames at the parameter file's chunk rate and arrive MS after their frame, each "
                              "tick runs the action due then (sag_ros.nodes.replay); MS: e.g. sag bench-ros's "
                              "observation-to-action p50 (/sag/latency/obs_age_ms + total_ms)")
    latency.add_argument("--latency-from", metavar="REPORT.json::METHOD",
                         help="the same replay, each chunk's latency drawn from those a sag bench-ros report measured "
                              "for METHOD (its jitter and deadline overruns included)")
    p.add_argument("--params-file", help="with --latency-ms/--latency-from: the graph's parameter file (default: "
                                         "the shipped config/sag_nodes.yaml)")
    p.add_argument("--param", action="append", default=[], type=_node_parameter_arg, metavar="NODE.NAME=VALUE",
                   help="with --latency-ms/--latency-from: one of the replayed graph's parameters on top of the "
                        "file, e.g. sag_inference.execution_offset_s=0.0125 (repeatable)")
    p.add_argument("--json")
    p.add_argument("--videos", type=_COUNT0, default=0, help="write GIFs of the first N episodes")
    p.add_argument("--video-dir", default="runs/videos")
    p.set_defaults(func=_eval)
    p = sub.add_parser("pack", help="store a trained policy with fp16 weights (for shipping in models/)")
    p.add_argument("--policy", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_pack)

    p = sub.add_parser("train-pruner", help="train a SAG pruner for a frozen policy")
    p.add_argument("--policy", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--rho", type=float, default=0.9, help="target pruning rate")
    p.add_argument("--sparsity-weight", type=float, default=1.0, help="lambda of |mean(M) - rho|")
    p.add_argument("--iterations", type=_COUNT, default=300)
    p.add_argument("--batch-size", type=_COUNT, default=16)
    p.add_argument("--lr", type=float, default=1e-3, help="pruner network learning rate")
    p.add_argument("--cell-lr", type=float, default=5e-2, help="learning rate of the per-cell logit offsets")
    p.add_argument("--rate-warmup", type=_COUNT0, default=0, help="iterations over which the target ramps up to rho")
    p.add_argument("--init", help="warm start from this pruner (trained for the same policy)")
    p.add_argument("--init-transfer", action="store_true",
                   help="--init may be a pruner of another policy with the same grid (e.g. before more training)")
    p.add_argument("--init-interval", type=interval_schedule, metavar="N[@START]",
                   help="warm start from interval caching: every N-th step computes every block (from step START on; "
                        "step 0 always)")
    p.add_argument("--reuse", choices=["one_for_all", "per_block"], default="one_for_all")
    p.add_argument("--reference", choices=["dense", "demo"], default="dense")
    p.add_argument("--fidelity-window", choices=["chunk", "executed"], default="chunk",
                   help="actions the fidelity term compares: the whole chunk or the Ta executed ones")
    p.add_argument("--fidelity-steps", choices=["final", "trajectory"], default="final",
                   help="compare the sampled chunks, or every step's clean-chunk prediction")
    p.add_argument("--static", action="store_true", help="one learned mask for all observations (L2C-style)")
    p.add_argument("--granularity", choices=list(GRANULARITIES), default="block",
                   help="one decision per (step, block) cell, per step for all its blocks, or (hierarchical, with "
                        "--hold-x0) a decision per step whether it holds over per-block decisions in the steps that compute")
    p.add_argument("--step-budget", type=_COUNT, metavar="K",
                   help="with --granularity hierarchical: every chunk computes K steps (step 0 and the K - 1 the "
                        "pruner ranks first) and holds the rest")
    p.add_argument("--hold-x0", action="store_true",
                   help="steps whose every block is pruned hold the last computed clean-chunk prediction")
    p.add_argument("--step-cost", type=float, default=0.0,
                   help="with --hold-x0: a computed step's fixed cost (embedding, head, update) in blocks; rho is "
                        "then the pruned fraction of that cost plus the blocks' (0: of the blocks alone)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    p.add_argument("--steps", type=_COUNT, default=100, help="denoising steps the masks are for")
    p.add_argument("--noise-scale", type=_non_negative_float, default=1.0,
                   help="train on chunks sampled with DDPM's fresh noise times this (the `sag eval --noise-scale` "
                        "the pruner will run at)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_COUNT, default=2)
    _add_run_options(p)
    p.set_defaults(func=_train_pruner)

    p = sub.add_parser("bench", help="dense vs SAG vs baselines: score, FLOPs, latency, speed-up")
    p.add_argument("--policy", help="checkpoint (default: the shipped Push-T policy)")
    p.add_argument("--pruner", action="append", default=[], metavar="NAME=PATH", help="a pruner to compare (repeat)")
    p.add_argument("--task", help="default: the policy's task")
    p.add_argument("--episodes", type=_COUNT0, default=50, help="env seeds from the task's test seeds (0: speed only)")
    p.add_argument("--seed-start", type=int, help="first env seed (default: the task's first test seed)")
    p.add_argument("--noise-seeds", type=_COUNT, default=3, help="evaluation seeds per env seed")
    p.add_argument("--workers", type=_COUNT, default=2)
    p.add_argument("--latency-obs", type=_COUNT, default=5, help="env seeds to record observations from")
    p.add_argument("--repeats", type=_COUNT, default=5)
    p.add_argument("--threads", type=_COUNT, default=1)
    p.add_argument("--intervals", type=interval_schedule, nargs="*", default=[(2, 0), (4, 0), (10, 0)],
                   metavar="N[@START]",
                   help="interval caching baselines: every N-th step computes all blocks (from step START on; "
                        "step 0 always)")
    p.add_argument("--interval-reuse", nargs="+", default=["per_block"], choices=["per_block", "one_for_all"],
                   help="reuse policies the interval baselines run with (each a row)")
    p.add_argument("--hold-x0", nargs="+", choices=["off", "on"],
                   help="a row per setting for every interval baseline and pruner: steps whose every block is pruned "
                        "hold the last computed clean-chunk prediction (default: each pruner's own, off for intervals)")
    p.add_argument("--ddim", type=_COUNT, nargs="*", default=[10, 30], help="DDIM step counts")
    p.add_argument("--backends", nargs="*", default=["eager"], choices=BACKEND_NAMES,
                   help="block backends; dense and every pruner run on each beyond the first")
    p.add_argument("--json", default="runs/bench/bench.json")
    p.add_argument("--plot", default="runs/bench/bench.png")
    p.set_defaults(func=_bench)

    p = sub.add_parser("paired", help="compare methods episode by episode: those of a `sag bench` JSON, or runs "
                                      "pooled from several `sag bench` / `sag eval` JSONs")
    p.add_argument("report", nargs="?", help="the JSON `sag bench` wrote")
    p.add_argument("--pool", action="append", default=[], metavar="NAME=RUN[,RUN...]",
                   help="a method pooled from runs, each a `sag eval` JSON or BENCH.json::METHOD (its noise seeds); "
                        "repeat per method; methods pair on the episodes they share")
    p.add_argument("--methods", nargs="+", help="method names, in the order to compare (default: all)")
    p.add_argument("--plot", help="also draw the pairs as a forest plot (difference ± 2 standard errors) to this PNG")
    p.add_argument("--component", help="reports of a multi-task task ('a+b'): pair only the episodes of this "
                                       "component (e.g. mw-door-open)")
    p.set_defaults(func=_paired)

    p = sub.add_parser("bench-ros", help="dense vs SAG closed loop over ROS 2: rate, obs-to-action latency, score")
    p.add_argument("--policy", help="checkpoint (default: the shipped Push-T policy)")
    p.add_argument("--pruner", action="append", default=[], metavar="NAME=PATH", help="a SAG pruner to compare (repeat)")
    p.add_argument("--episodes", type=_COUNT, default=3, help="episodes per method")
    p.add_argument("--seed", type=int, default=100_000, help="seed of the first episode (the same for every method)")
    p.add_argument("--rate", type=_non_negative_float, default=0.0,
                   help="control rate in Hz: the sim's steps and the chunks (0 = the parameter file's chunk rate, "
                        "the task's own step rate: Push-T 10 Hz, Meta-World 80 Hz)")
    p.add_argument("--max-steps", type=_COUNT0, default=0, help="steps per episode (0 = the task's own limit)")
    p.add_argument("--backend", action="append", default=None, choices=BACKEND_NAMES,
                   help="block backend (repeat to compare; dense and every pruner run on each; default eager)")
    p.add_argument("--threads", type=_COUNT, default=1, help="torch threads of the inference node")
    p.add_argument("--config", help="node parameter file (default: config/sag_nodes.yaml)")
    p.add_argument("--json", default="runs/bench/bench_ros.json")
    p.add_argument("--plot", help="the methods' latency distributions against the period (default: the JSON's path "
                                  "with .png)")
    p.set_defaults(func=_bench_ros)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a subcommand. What a user can get wrong (a missing or mismatched file, a value the layers refuse, a
    backend's missing package) ends with ``sag <command>: <what to fix>`` and exit status 1; set
    ``SAG_TRACEBACK=1`` to see where it was raised."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as exc:
        if os.environ.get("SAG_TRACEBACK") or not _says_what_to_fix(exc):
            raise
        raise SystemExit(f"sag {args.command}: {exc}") from None


def _says_what_to_fix(exc: Exception) -> bool:
    """Errors the layers raise on bad input: their message is the whole story. (Imported here, after the failure:
    the classes live in modules that import torch, which `sag --help` and `sag paired` do not need.)"""
    from sag_ros.engine.base import MissingDependencyError
    from sag_ros.policy.checkpoint import CheckpointError

    return isinstance(exc, (OSError, ValueError, CheckpointError, MissingDependencyError))


if __name__ == "__main__":
    main(sys.argv[1:])
