"""`sag bench`: dense vs SAG vs baselines on one checkpoint, the same seeds, one run.

Two measurements per method:
- speed: predict latency at batch 1 on the same recorded observations, methods interleaved round-robin so
  machine noise hits all alike; p50/p95/p99, speed-up = dense p50 / method p50 from the same run, FLOPs
  per chunk counted with ``torch.utils.flop_counter`` and the executed-block fraction.
- quality: closed-loop task score and success rate over env seeds x noise seeds, and, open loop, the mean
  absolute difference between the method's executed actions and dense's on the recorded observations from the
  same noise (``l1_to_dense``, in the task's action units). With a weak policy the closed-loop score of 50
  episodes moves by +-0.03 between noise seeds; the open-loop difference resolves far smaller changes, though
  it says nothing about which deviations the task tolerates.
Writes JSON and a plot (score vs speed-up, and pruner masks for a few observations).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from sag_ros.predictor import PolicyPredictor, PredictorSpec
from sag_ros.sim.evaluate import ObservationHistory, evaluate, summarize
from sag_ros.sparse.mask import interval_label
from sag_ros.tables import format_table


@dataclass(frozen=True)
class Method:
    name: str
    spec: PredictorSpec


def standard_methods(policy_path: str, pruners: dict[str, str],
                     intervals: tuple[tuple[int, int], ...] = ((2, 0), (4, 0), (10, 0)),
                     ddim_steps: tuple[int, ...] = (10, 30), backends: tuple[str, ...] = ("eager",),
                     interval_reuse: tuple[str, ...] = ("per_block",),
                     hold_x0: tuple[bool | None, ...] = (None,)) -> list[Method]:
    """Dense (the checkpoint's own sampler), DDIM-k, interval caching (``intervals``: (every n-th step, from step);
    a row per reuse policy in ``interval_reuse``; block-wise reuse is the baseline's own) and each named pruner
    file (SAG or static) on the first backend; dense and the pruners again on every further backend. Intervals and
    pruners get a row per ``hold_x0`` setting (None: each pruner's own, off for intervals; True adds " hold-x0" to
    the name). The first method is the reference."""
    base = PredictorSpec(policy_path, backend=backends[0])

    def held(name: str, spec: PredictorSpec, hold: bool | None) -> tuple[str, PredictorSpec]:
        return name + (" hold-x0" if hold else ""), dataclasses.replace(spec, hold_x0=hold)

    pruned = []
    for name, path in pruners.items():
        spec = dataclasses.replace(base, pruner_path=path)  # it samples with the pruner's own sampler
        pruned += [held(name, spec, hold) for hold in hold_x0]
    methods = [Method("dense", base)]
    methods += [Method(f"ddim-{k}", dataclasses.replace(base, sampler="ddim", num_steps=k)) for k in ddim_steps]
    methods += [Method(*held(f"interval {interval_label(n, start)}"
                             + ("" if reuse == "per_block" else f" {reuse.replace('_', '-')}"),
                             dataclasses.replace(base, interval=n, interval_start=start, reuse=reuse), hold))
                for n, start in intervals for reuse in interval_reuse for hold in hold_x0]
    methods += [Method(name, spec) for name, spec in pruned]
    for backend in backends[1:]:
        methods.append(Method(f"dense [{backend}]", dataclasses.replace(base, backend=backend)))
        methods += [Method(f"{name} [{backend}]", dataclasses.replace(spec, backend=backend)) for name, spec in pruned]
    return methods


def recorded_observations(predictor: PolicyPredictor, task_name: str, seeds: range, every: int = 40) -> list[dict]:
    """Observations from short dense rollouts of the policy itself (what the controller will see)."""
    from sag_ros.sim.task import get_task

    task = get_task(task_name)
    adapter = task.make_adapter()
    out = []
    try:
        for seed in seeds:
            adapter.reset(seed)
            history = ObservationHistory(adapter.observation(), predictor.n_obs_steps)
            for step in range(0, 3 * every, 8):
                obs = history.stacked()
                if step % every == 0:
                    out.append(obs)
                for action in predictor(obs, seed=step):
                    adapter.step(action)
                    history.append(adapter.observation())
    finally:
        adapter.close()
    return out


def count_flops(predictor: PolicyPredictor, observations: list[dict]) -> float:
    """Mean FLOPs of one chunk (encoder, pruner and denoiser), counted by torch's dispatcher."""
    totals = []
    for i, obs in enumerate(observations):
        with FlopCounterMode(display=False) as counter:
            predictor(obs, seed=i)
        totals.append(counter.get_total_flops())
    return float(np.mean(totals))


def _method_flops(method: Method, predictor: PolicyPredictor, observations: list[dict], threads: int) -> float:
    """FLOPs are the method's, not the backend's: count them through eager blocks, which torch's counter sees
    (it cannot look inside ONNX Runtime sessions or compiled graphs)."""
    if method.spec.backend != "eager":
        predictor = dataclasses.replace(method.spec, backend="eager", threads=threads)()
    return count_flops(predictor, observations)


def measure_latency(predictors: dict[str, PolicyPredictor], observations: list[dict], repeats: int) -> dict[str, dict]:
    """Round-robin timing: for each repeat and observation, every method once, in a rotating order.

    Also counts the distinct masks a method's planner ran over the observations ("distinct_masks"; None for a
    planner without masks): whether a pruner's masks follow the observation at all, read off the same run."""
    names = list(predictors)
    samples: dict[str, list[float]] = {n: [] for n in names}
    fractions: dict[str, list[float]] = {n: [] for n in names}
    stages: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    masks: dict[str, set[bytes]] = {n: set() for n in names}
    for n in names:  # warm-up
        predictors[n](observations[0], seed=0)
    rounds = [(r, i) for r in range(repeats) for i in range(len(observations))]
    for count, (r, i) in enumerate(tqdm(rounds, desc="latency", dynamic_ncols=True)):
        order = names[count % len(names):] + names[:count % len(names)]
        for n in order:
            start = time.perf_counter()
            predictors[n](observations[i], seed=r * 1000 + i)
            samples[n].append(time.perf_counter() - start)
            t = predictors[n].last_timing
            fractions[n].append(t.executed_fraction)
            stages[n].append((t.encode_s, t.plan_s, t.denoise_s))
            mask = getattr(predictors[n].planner, "last_mask", None)
            if mask is not None:
                masks[n].add(mask.to("cpu", torch.bool).numpy().tobytes())
    out = {}
    for n in names:
        ms = np.array(samples[n]) * 1e3
        enc, plan, den = np.median(np.array(stages[n]), axis=0) * 1e3
        plan_all = np.array(stages[n])[:, 1] * 1e3  # a SAG head's cost varies (certified or full pass): mean, p99 too
        out[n] = {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
                  "p99_ms": float(np.percentile(ms, 99)), "encode_ms": float(enc), "plan_ms": float(plan),
                  "plan_mean_ms": float(plan_all.mean()), "plan_p99_ms": float(np.percentile(plan_all, 99)),
                  "denoise_ms": float(den), "executed_fraction": float(np.mean(fractions[n])),
                  "distinct_masks": len(masks[n]) or None}
    return out


@torch.no_grad()
def action_l1_to_reference(predictors: dict[str, PolicyPredictor], observations: list[dict],
                           reference: str) -> dict[str, float]:
    """Per method, mean |executed action - the reference's| over the observations, the same noise seed for all."""
    expected = [predictors[reference](obs, seed=i) for i, obs in enumerate(observations)]
    return {name: float(np.mean([np.abs(predictor(obs, seed=i) - want).mean()
                                 for i, (obs, want) in enumerate(zip(observations, expected))]))
            for name, predictor in predictors.items()}


def run_benchmark(methods: list[Method], task_name: str, seeds: range, noise_seeds: int, workers: int,
                  latency_observations: int, repeats: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    predictors = {m.name: dataclasses.replace(m.spec, threads=threads)() for m in methods}
    dense = predictors[methods[0].name]
    observations = recorded_observations(dense, task_name, range(seeds.start, seeds.start + latency_observations))
    if not observations:
        raise ValueError("latency_observations must be >= 1")
    latency = measure_latency(predictors, observations, repeats)
    flops = {m.name: _method_flops(m, predictors[m.name], observations[:3], threads) for m in methods}
    l1_to_dense = action_l1_to_reference(predictors, observations, methods[0].name)
    results = {}
    for m in methods:
        episodes = [evaluate(m.spec, task_name, seeds, workers=workers, noise_seed=s, desc=f"{m.name} [{s}]")
                    for s in range(noise_seeds if len(seeds) else 0)]  # no seeds: a speed-only benchmark
        runs = [summarize(run) for run in episodes]
        scores, successes = [r["score"] for r in runs], [r["success_rate"] for r in runs]
        # [noise seed][env seed], the same episodes for every method: runs and methods compare episode by episode
        episode_scores = [[float(r.score) for r in run] for run in episodes]
        dense_scores = results[methods[0].name]["episode_scores"] if results else episode_scores
        results[m.name] = {
            "score_mean": _mean(scores), "score_std": _std(scores),
            "success_mean": _mean(successes), "success_std": _std(successes),
            "episode_scores": episode_scores,
            "episode_successes": [[bool(r.success) for r in run] for run in episodes],
            "paired_vs_dense": paired_difference(episode_scores, dense_scores),
            "gflops_per_chunk": flops[m.name] / 1e9, "l1_to_dense": l1_to_dense[m.name], **latency[m.name],
            "speedup": latency[methods[0].name]["p50_ms"] / latency[m.name]["p50_ms"],
            "spec": dataclasses.asdict(m.spec),
        }
    masks = _example_masks(predictors, observations)
    return {"task": task_name, "seeds": [seeds.start, seeds.stop], "noise_seeds": noise_seeds, "threads": threads,
            "latency_observations": len(observations), "repeats": repeats, "methods": results, "masks": masks}


def paired_difference(scores: list[list[float]], reference: list[list[float]]) -> dict[str, float | int] | None:
    """Mean and standard error of the per-episode score difference against ``reference`` over the same episodes
    ([noise seed][env seed] both). Pairing removes what the episodes share (a layout that every method finds hard):
    on Meta-World button-press (150 episodes) its standard error was 0.024-0.027 where that of the difference of
    two independent means would be 0.058.
    None without episodes (a speed-only run)."""
    diff = np.ravel(scores) - np.ravel(reference)
    if diff.size == 0:
        return None
    sem = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
    return {"mean": float(diff.mean()), "sem": sem, "episodes": int(diff.size)}


def exact_mcnemar(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for the discordant episodes (solved by one method only): with no difference
    between the methods each goes either way with probability 1/2."""
    n, k = only_a + only_b, min(only_a, only_b)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


Episodes = dict[tuple[int, int], tuple[float, bool]]
"""Scored episodes of one method: (noise seed, env seed) -> (score, success)."""


def report_episodes(report: dict, method: str | None = None) -> Episodes:
    """One method's episodes from a `sag bench` report, or (``method`` None) those of a `sag eval` report, which
    are its noise seed's (0 unless `--noise-seed` said otherwise; reports older than that option are 0): `sag eval`
    seeds its sampling as `sag bench` seeds that noise seed, so the two pair episode by episode (runs are
    deterministic)."""
    if method is None:
        if not isinstance(report.get("episodes"), list):
            raise KeyError("not a `sag eval` report (no episode list); name a method of a `sag bench` report")
        noise = int(report.get("noise_seed", 0))
        return {(noise, int(e["seed"])): (float(e["score"]), bool(e["success"])) for e in report["episodes"]}
    if method not in report.get("methods", {}):
        raise KeyError(f"no method {[method]} in this report (it has {list(report.get('methods', {}))})")
    result, start = report["methods"][method], report["seeds"][0]
    return {(noise, start + i): (float(score), bool(solved))
            for noise, (scores, successes) in enumerate(zip(result.get("episode_scores", []),  # none: speed only
                                                            result.get("episode_successes", [])))
            for i, (score, solved) in enumerate(zip(scores, successes))}


def pool_episodes(parts: Sequence[Episodes]) -> Episodes:
    """Several runs of one method as one, e.g. a `sag bench` run on new layouts and a `sag eval` run on others;
    an episode in two parts is refused (it would count twice)."""
    pooled: Episodes = {}
    for part in parts:
        twice = sorted(pooled.keys() & part.keys())
        if twice:
            raise ValueError(f"episodes (noise seed, env seed) {twice[:3]}{' ...' if len(twice) > 3 else ''} "
                             f"appear in two of the pooled runs")
        pooled.update(part)
    return pooled


def pooled_method(spec: str, component: str | None = None) -> tuple[str, Episodes]:
    """'NAME=RUN[,RUN...]', each RUN a `sag eval` JSON or 'BENCH.json::METHOD' -> (NAME, its pooled episodes, only
    those of ``component`` when given); NAME may not hold '=' (the methods of a report may: 'interval n=10')."""
    name, sep, runs = spec.partition("=")  # at the first '=': method names in reports hold some ("n=10")
    if not (sep and name and runs):
        raise ValueError(f"expected NAME=RUN[,RUN...], got {spec!r}")
    parts = []
    for run in runs.split(","):
        path, _, method = run.partition("::")
        report = json.loads(Path(path).read_text())
        episodes = report_episodes(report, method or None)
        parts.append(episodes if component is None else component_episodes(episodes, report.get("task", ""), component))
    return name, pool_episodes(parts)


def compare_episodes(runs: dict[str, Episodes]) -> list[dict]:
    """Each pair (a, b) of methods, a listed first, over the episodes both ran: the per-episode score difference
    a - b (:func:`paired_difference`), the episodes only a solved and only b solved, and their exact McNemar
    p-value. What decides "ahead of a baseline" with episodes this few: the difference of two means over noise
    seeds cannot resolve gaps of a few hundredths."""
    names, rows = list(runs), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = sorted(runs[a].keys() & runs[b].keys())
            if not common:
                raise ValueError(f"{a!r} and {b!r} share no episode (noise seed, env seed) to pair")
            score_a, solved_a = map(np.array, zip(*(runs[a][k] for k in common)))
            score_b, solved_b = map(np.array, zip(*(runs[b][k] for k in common)))
            only_a, only_b = int((solved_a & ~solved_b).sum()), int((solved_b & ~solved_a).sum())
            rows.append({"a": a, "b": b, "score": paired_difference([score_a], [score_b]),
                         "only_a": only_a, "only_b": only_b, "mcnemar_p": exact_mcnemar(only_a, only_b),
                         "success_a": float(solved_a.mean()), "success_b": float(solved_b.mean())})
    return rows


def component_episodes(episodes: Episodes, task_name: str, component: str) -> Episodes:
    """The episodes of one component of a multi-task task (``a+b``: env seed s plays component s % 2)."""
    from sag_ros.sim.multi_task import component_index, component_names

    parts = component_names(task_name)
    if component not in parts or len(parts) < 2:
        raise ValueError(f"{component!r} is not a component of the report's task {task_name!r}")
    index = parts.index(component)
    return {key: value for key, value in episodes.items() if component_index(key[1], len(parts)) == index}


def paired_comparisons(report: dict, methods: Sequence[str] | None = None,
                       component: str | None = None) -> list[dict]:
    """:func:`compare_episodes` over the methods of one `sag bench` report that have episodes (all by default),
    over one component's episodes when the report's task has several (:func:`component_episodes`)."""
    names = list(methods or report["methods"])
    episodes = {name: report_episodes(report, name) for name in names}
    if component is not None:
        episodes = {name: component_episodes(runs, report["task"], component) for name, runs in episodes.items()}
    return compare_episodes({name: runs for name, runs in episodes.items() if runs})


def format_paired(rows: list[dict]) -> str:
    return format_table([{"a": r["a"], "b": r["b"], "score a - b (paired)": _format_paired(r["score"]),
                          "episodes": r["score"]["episodes"], "solved only by a": r["only_a"],
                          "only by b": r["only_b"], "McNemar p": f"{r['mcnemar_p']:.3f}",
                          "success a / b": f"{r['success_a']:.3f} / {r['success_b']:.3f}"} for r in rows])


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _std(values: list[float]) -> float | None:
    return float(np.std(values)) if values else None


def _example_masks(predictors: dict[str, PolicyPredictor], observations: list[dict]) -> dict[str, list]:
    """Masks the first SAG pruner predicts for up to four observations (for the heat-map plot)."""
    from sag_ros.sparse.planner import SagPlanner

    for name, predictor in predictors.items():
        planner = predictor.planner
        if isinstance(planner, SagPlanner):  # pruners trained without the observation plan a StaticMaskPlanner
            masks = []
            for obs in observations[:4]:
                predictor(obs, seed=0)
                masks.append(planner.last_mask.int().tolist())
            return {"method": name, "masks": masks}
    return {}


def _format_masks(row: dict, report: dict) -> str:
    """"k/N": k distinct masks over the N latency observations; "-" for methods without masks (or older reports)."""
    count = row.get("distinct_masks")
    return f"{count}/{report['latency_observations']}" if count else "-"


def format_results(report: dict) -> str:
    rows = []
    for name, r in report["methods"].items():
        scored = r["score_mean"] is not None
        rows.append({"method": name,
                     "score": f"{r['score_mean']:.3f}±{r['score_std']:.3f}" if scored else "-",
                     "success": f"{r['success_mean']:.2f}±{r['success_std']:.2f}" if scored else "-",
                     "vs dense (paired)": _format_paired(r.get("paired_vs_dense")),
                     "L1 to dense": f"{r['l1_to_dense']:.2f}" if "l1_to_dense" in r else "-",
                     "blocks": f"{r['executed_fraction']:.3f}", "masks": _format_masks(r, report),
                     "GFLOP": f"{r['gflops_per_chunk']:.3f}",
                     "p50 ms": f"{r['p50_ms']:.1f}", "p95 ms": f"{r['p95_ms']:.1f}", "p99 ms": f"{r['p99_ms']:.1f}",
                     "plan ms": f"{r['plan_ms']:.2f}", "speed-up": f"{r['speedup']:.2f}x"})
    return format_table(rows)


def _format_paired(paired: dict | None) -> str:
    """'+0.012±0.009': mean per-episode score difference to dense ± its standard error; '-' without episodes."""
    return "-" if paired is None else f"{paired['mean']:+.3f}±{paired['sem']:.3f}"


def _speedup_ticks(low: float, high: float) -> list[float]:
    """A few round speed-ups spanning [low, high] for a log axis."""
    candidates = [1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    inside = [t for t in candidates if low / 1.2 <= t <= high * 1.2]
    return inside or [round(low, 1), round(high, 1)]


PLOT_MARKERS = "os^D"


def _pyplot():
    """matplotlib's pyplot on the Agg backend: plots are files, written on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def plot_results(report: dict, path: Path) -> None:
    """Score against speed-up for every scored method, and the pruner's masks for a few observations, as a file."""
    _save_figure(results_figure(report), path)


def results_figure(report: dict):
    """The figure :func:`plot_results` saves (a matplotlib ``Figure``), kept apart so that tests can read it."""
    import matplotlib.ticker

    plt = _pyplot()

    masks = report.get("masks", {}).get("masks", [])
    fig, axes = plt.subplots(1, 1 + len(masks), figsize=(5 + 2.6 * len(masks), 5.4),
                             gridspec_kw={"width_ratios": [2] + [1] * len(masks)})
    axes = np.atleast_1d(axes)
    ax = axes[0]
    scored = [(name, r) for name, r in report["methods"].items() if r["score_mean"] is not None]
    for i, (name, r) in enumerate(scored):
        # a legend, not labels at the points: sparse methods cluster at the same speed-up and their labels overlapped;
        # markers change every ten methods, where the colour cycle repeats
        ax.errorbar(r["speedup"], r["score_mean"], yerr=r["score_std"], fmt=PLOT_MARKERS[i // 10 % len(PLOT_MARKERS)],
                    capsize=3, label=name)
    if scored:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_xlabel("speed-up vs dense DDPM-100 (p50, same run)")
    ax.set_ylabel(f"{report['task']} score")
    ax.set_xscale("log")
    speedups = [r["speedup"] for r in report["methods"].values() if r["score_mean"] is not None]
    if speedups:  # a speed-only run (no episodes) plots no points
        ax.set_xticks(_speedup_ticks(min(speedups), max(speedups)))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # log axes label minor ticks: they overlap
    ax.grid(alpha=0.3)
    for i, mask in enumerate(np.array(masks, dtype=bool)):
        # grey = pruned, white = computed; red = cells where this observation's mask differs from obs 0's
        image = np.where(mask[..., None], 0.35, 1.0) * np.ones(3)
        changed = mask != masks[0]
        image[changed] = (0.85, 0.1, 0.1)
        axes[1 + i].imshow(image, aspect="auto", interpolation="nearest")
        title = f"obs {i}: {mask.mean():.0%} pruned (grey)"
        axes[1 + i].set_title(title + (f"\n{changed.sum()} cells differ from obs 0 (red)" if i else ""), fontsize=8)
        axes[1 + i].set_xlabel("block (SA, CA, FFN per layer)")
        axes[1 + i].set_ylabel("denoising step")
    return fig


def plot_paired(rows: list[dict], path: Path, margin: float | None = 0.03) -> None:
    """A forest plot of :func:`compare_episodes` rows: each pair's paired score difference a - b with two standard
    errors either side, against zero and (``margin``) issue #3's tolerance below dense."""
    fig, ax = _pyplot().subplots(figsize=(7, 1.2 + 0.45 * len(rows)))
    positions = np.arange(len(rows))[::-1]  # the first pair on top, as in the table
    ax.errorbar([r["score"]["mean"] for r in rows], positions, xerr=[2 * r["score"]["sem"] for r in rows], fmt="o",
                capsize=4)
    ax.set_yticks(positions, [f"{r['a']} - {r['b']} ({r['score']['episodes']} ep.)" for r in rows], fontsize=8)
    ax.axvline(0.0, color="k", lw=0.8)
    if margin:
        for x in (-margin, margin):
            ax.axvline(x, color="tab:red", lw=0.8, ls="--")
    ax.set_xlabel(f"paired score difference a - b, ± 2 standard errors{f' (dashed: ±{margin:g})' if margin else ''}")
    ax.grid(axis="x", alpha=0.3)
    _save_figure(fig, path)


def save_report(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
