"""GPU check: the shipped policy on CUDA, every inference backend present, equivalence and timing, one JSON.

    python -m sag_ros.engine.gpu_check [--device cuda] [--out $OUT/gpu_check.json] [--quick]
    tools/gpu_check.sh                      # the same, with a wall-clock limit

Needs only torch, numpy and pyyaml (no network, nothing installed): what is absent is reported as skipped
with the reason. Steps:

1. the policy: the shipped checkpoint (``sag_ros.resources.default_policy_path()``) or, when that file is
   missing, a freshly initialised policy from ``config/pusht_image.yaml``; moved to ``--device``;
2. device probes: each stage of ``sag_ros.policy`` (normalizer, encoder incl. the training crop, noise
   drawing in ``prepare_chunk``, ``scheduler.step``, ``sample``, ``to_actions``, ``compute_loss``) and the
   ``PolicyPredictor`` / pruner path, run on the device; a stage that raises is recorded with its error, and
   the check itself draws its noise with a generator on the device so that it does not depend on them;
3. optionally CUDA graphs: dense and SAG chunks whose steps replay one captured graph per distinct mask row
   (:mod:`sag_ros.engine.cuda_graphs`), error and time against eager launches;
4. per backend (eager, onnxruntime, tensorrt, eager fp16 on CUDA, then compile, whose build is the slowest):
   equivalence against eager fp32 on the device with the same prepared inputs (noise, cross-attention
   memory), dense and SAG with a random-but-fixed mask (~90 % pruned, one-for-all reuse; ``--pruner``: a trained
   pruner's mask for the check's observation, with its reuse and held steps): relative error
   ||x - x_ref|| / ||x_ref|| of the normalized chunk, tolerance 1e-4 (fp32) / 1e-2 (fp16); then the time of
   one whole dense and one SAG chunk (encode + prepare + denoise + unnormalize), p50/p95 over ``--runs`` runs
   (CUDA events); onnxruntime without a CUDA execution provider runs on a CPU copy of the policy (reported
   as such).

The JSON is rewritten after each part, so a run stopped by the wall-clock limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sag_ros.engine import BACKENDS
from sag_ros.engine.base import MissingDependencyError
from sag_ros.policy.device import batch_to, resolve_device
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.sampling import ChunkInputs, dense_runner, eager_kernels, prepare_chunk, reverse_diffusion
from sag_ros.sparse.cache import make_cache
from sag_ros.sparse.mask import executed_fraction, held_steps, with_first_step_computed
from sag_ros.sparse.sampler import sparse_runner
from sag_ros.tables import format_table

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
ALL_BACKENDS = tuple(BACKENDS)
PRUNE_RATE = 0.9


# -- the policy -------------------------------------------------------------------------------------------

def load_check_policy(policy_path: str | None, config_path: Path) -> tuple[DiffusionPolicy, dict[str, Any]]:
    """The shipped (or given) checkpoint, else a freshly initialised policy from the YAML config (CPU, eval)."""
    from sag_ros.policy.checkpoint import load_policy

    why = ""
    if policy_path is None:
        try:
            from sag_ros.resources import default_policy_path

            policy_path = str(default_policy_path())
        except Exception as exc:  # resources unusable: fall back below
            policy_path, why = None, f"default_policy_path() failed: {exc!r}"
    if policy_path is not None and Path(policy_path).is_file():
        policy, _ = load_policy(Path(policy_path))
        return policy.eval(), {"source": "checkpoint", "path": policy_path}
    why = f"{policy_path} does not exist" if policy_path is not None else why
    import yaml

    from sag_ros.policy.config import PolicyConfig

    config = PolicyConfig.from_dict(yaml.safe_load(config_path.read_text())["policy"])
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).eval()
    return policy, {"source": "fresh", "path": str(config_path), "why": why}


def random_observation(policy: DiffusionPolicy, seed: int = 0) -> dict[str, torch.Tensor]:
    """A well-formed raw observation (CPU, batch 1)."""
    g = torch.Generator().manual_seed(seed)
    enc, to = policy.config.encoder, policy.config.denoiser.n_obs_steps
    return {"image": torch.randint(0, 256, (1, to, enc.image_size, enc.image_size, 3), generator=g, dtype=torch.uint8),
            "state": torch.rand((1, to, enc.state_dim), generator=g) * 512,
            "keypoints": torch.rand((1, to, enc.lowdim_dim), generator=g) * 512}


def fixed_mask(num_steps: int, num_blocks: int, rate: float = PRUNE_RATE, seed: int = 0) -> torch.Tensor:
    """A random-but-fixed SAG mask [K, 3L] (True = pruned), first step computed."""
    g = torch.Generator().manual_seed(seed)
    return with_first_step_computed(torch.rand((num_steps, num_blocks), generator=g) < rate)


@dataclass(frozen=True)
class SagChunk:
    """What the check's SAG chunk runs: a mask [K, 3L] (CPU, True = pruned), its reuse policy, and whether steps
    whose every block is pruned hold their clean-chunk prediction (run nothing)."""
    mask: torch.Tensor
    reuse: str = "one_for_all"
    hold_x0: bool = False
    source: str = "random mask"

    def describe(self) -> dict[str, Any]:
        held = sum(held_steps(self.mask.tolist()))
        return {"source": self.source, "pruned_fraction": 1.0 - executed_fraction(self.mask), "reuse": self.reuse,
                "hold_x0": self.hold_x0, "held_steps": held if self.hold_x0 else 0}


def pruner_chunk(path: str, policy: DiffusionPolicy, features: torch.Tensor) -> SagChunk:
    """The mask a trained pruner predicts for the check's observation, with the reuse and held steps it was trained
    for (a static pruner's one mask alike)."""
    from sag_ros.sparse.artifact import load_pruner

    pruner, extra = load_pruner(Path(path), policy)
    with torch.no_grad():
        mask = pruner.to(features.device).predict_mask(features)[0].cpu()
    return SagChunk(mask, extra.get("reuse", "one_for_all"), bool(extra.get("hold_x0", False)), f"pruner {path}")


def _device_of(policy: DiffusionPolicy) -> torch.device:
    return policy.denoiser.pos_emb.device


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400]


# -- device probes ---------------------------------------------------------------------------------------

def probe_device(policy: DiffusionPolicy, obs_cpu: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Run each stage of the policy on its device; {stage: {ok, error?, where?}}."""
    from sag_ros.policy.encoder import crop_images

    device = _device_of(policy)
    obs = batch_to(obs_cpu, device)
    out: dict[str, dict[str, Any]] = {}

    def stage(name: str, where: str, fn: Callable[[], Any]) -> Any:
        try:
            with torch.no_grad():
                value = fn()
            if isinstance(value, torch.Tensor) and value.device.type != device.type:
                out[name] = {"ok": False, "where": where, "error": f"result on {value.device}, policy on {device}"}
            else:
                out[name] = {"ok": True, "where": where}
            return value
        except Exception as exc:  # record and go on: the check works around each failure
            out[name] = {"ok": False, "where": where, "error": _error(exc)}
            return None

    key = "state" if "state" in policy.obs_keys else "keypoints"
    stage("normalizer", "policy/normalizer.py", lambda: policy.normalizer[key].normalize(obs[key].float()))
    features = stage("encode_observation", "policy/policy.py:encode_observation", lambda: policy.encode_observation(obs))
    if policy.encoder.backbone is not None:
        images = obs["image"].flatten(0, 1).permute(0, 3, 1, 2).float()
        size = policy.config.encoder.crop_size
        stage("encoder_crop_eval", "policy/encoder.py:crop_images", lambda: crop_images(images, size, random=False))
        stage("encoder_crop_train_cpu_generator", "policy/encoder.py:crop_images",
              lambda: crop_images(images, size, random=True, generator=torch.Generator().manual_seed(0)))
    if features is None:
        features = torch.zeros(1, policy.config.denoiser.n_obs_steps, policy.config.encoder.feature_dim, device=device)
    schedule = policy.schedule
    stage("prepare_chunk_no_generator", "policy/sampling.py:prepare_chunk",
          lambda: prepare_chunk(policy.denoiser, schedule, features, None).x_init)
    stage("prepare_chunk_cpu_generator", "policy/sampling.py:prepare_chunk",
          lambda: prepare_chunk(policy.denoiser, schedule, features, torch.Generator().manual_seed(0)).x_init)
    stage("prepare_chunk_device_generator", "policy/sampling.py:prepare_chunk",
          lambda: prepare_chunk(policy.denoiser, schedule, features, torch.Generator(device=device).manual_seed(0)).x_init)
    x = torch.randn(1, policy.config.denoiser.horizon, policy.config.denoiser.action_dim, device=device)
    stage("scheduler_step", "policy/scheduler.py:step", lambda: schedule.step(0, x, x, x))
    stage("scheduler_add_noise", "policy/scheduler.py:add_noise",
          lambda: schedule.add_noise(x, x, torch.zeros(1, dtype=torch.long, device=device)))
    chunk = stage("sample_device_generator", "policy/policy.py:sample",
                  lambda: policy.sample(features, torch.Generator(device=device).manual_seed(0)))
    stage("sample_cpu_generator", "policy/policy.py:sample",
          lambda: policy.sample(features, torch.Generator().manual_seed(0)))
    if chunk is not None:
        stage("to_actions", "policy/policy.py:to_actions", lambda: policy.to_actions(chunk)["action"])
    action = torch.rand(1, policy.config.denoiser.horizon, policy.config.denoiser.action_dim, device=device) * 512
    stage("compute_loss_no_generator", "policy/policy.py:compute_loss", lambda: policy.compute_loss(obs, action))
    stage("compute_loss_cpu_generator", "policy/policy.py:compute_loss",
          lambda: policy.compute_loss(obs, action, torch.Generator().manual_seed(0)))

    def predictor_call():
        from sag_ros.predictor import PolicyPredictor

        return PolicyPredictor(policy)({k: v[0].numpy() for k, v in obs_cpu.items()}, seed=0)

    stage("predictor_numpy_obs", "predictor.py:PolicyPredictor.__call__", predictor_call)
    policy.eval()  # compute_loss does not switch modes, but keep the policy as it came

    def pruner_after_move():
        from sag_ros.sparse.pruner import Pruner, PrunerConfig

        d = policy.config.denoiser
        pruner = Pruner(PrunerConfig(num_steps=schedule.num_steps, num_blocks=d.num_blocks,
                                     obs_feature_dim=d.n_obs_steps * policy.config.encoder.feature_dim)).eval()
        pruner.index_table()  # cached on the CPU, as a planner built before .to(device) would have it
        return pruner.to(device).predict_mask(features)

    stage("pruner_moved_after_eval", "sparse/pruner.py:index_table", pruner_after_move)
    return out


# -- running chunks ---------------------------------------------------------------------------------------

def _inputs_to(inputs: ChunkInputs, device: torch.device, dtype: torch.dtype | None = None) -> ChunkInputs:
    def move(t):
        return None if t is None else t.to(device=device, dtype=dtype or t.dtype)

    return ChunkInputs(move(inputs.x_init), move(inputs.noise), move(inputs.kv))


def _runner(kind: str, kernels, sag: SagChunk):
    if kind == "dense":
        return dense_runner(kernels)
    return sparse_runner(kernels, sag.mask, make_cache(sag.reuse, len(kernels.block_fns)), sag.hold_x0)


def denoise(policy: DiffusionPolicy, inputs: ChunkInputs, kernels, kind: str, sag: SagChunk) -> torch.Tensor:
    with torch.no_grad():
        return reverse_diffusion(policy.schedule, inputs, kernels, _runner(kind, kernels, sag))


def whole_chunk(policy: DiffusionPolicy, kernels, obs: dict[str, torch.Tensor], kind: str, sag: SagChunk,
                seed: int, image_encoder: Callable | None = None) -> torch.Tensor:
    """What the controller pays per chunk: encode, prepare (noise + memory), denoise, unnormalize."""
    device = _device_of(policy)
    with torch.no_grad():
        features = policy.encode_observation(obs, image_encoder)
        generator = torch.Generator(device=device).manual_seed(seed)
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, generator, kernels.observation_kv)
        x = reverse_diffusion(policy.schedule, inputs, kernels, _runner(kind, kernels, sag))
        return policy.to_actions(x)["action"]


def time_ms(fn: Callable[[], Any], device: torch.device, runs: int, warmup: int) -> dict[str, float]:
    """p50/p95/mean in ms over ``runs`` calls; CUDA events and synchronize on CUDA, perf_counter elsewhere."""
    for _ in range(warmup):
        fn()
    samples = []
    cuda = device.type == "cuda"
    for _ in range(runs):
        if cuda:
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            samples.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e3)
    ms = np.asarray(samples)
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "runs": runs}


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    return float((x - ref).norm() / ref.norm().clamp(min=1e-12))


# -- backends ----------------------------------------------------------------------------------------------

def _build(name: str, policy: DiffusionPolicy):
    """(policy the backend runs on, backend, note); onnxruntime falls back to a CPU copy without a CUDA EP."""
    from sag_ros.engine import make_backend

    device = _device_of(policy)
    try:
        return policy, make_backend(name, policy.denoiser, batch_size=1, cache_dir=None, encoder=policy.encoder), ""
    except ValueError as exc:
        if name != "onnxruntime" or device.type == "cpu" or "onnxruntime offers only" not in str(exc):
            raise
        cpu_policy = copy.deepcopy(policy).cpu().eval()
        return (cpu_policy, make_backend(name, cpu_policy.denoiser, batch_size=1, cache_dir=None,
                                         encoder=cpu_policy.encoder),
                f"no CUDA execution provider ({_error(exc)}): ran on a CPU copy of the policy")


def check_backend(name: str, policy: DiffusionPolicy, reference: dict[str, torch.Tensor], inputs: ChunkInputs,
                  obs_cpu: dict[str, torch.Tensor], sag: SagChunk, runs: int, warmup: int) -> dict[str, Any]:
    """Equivalence against eager fp32 (same inputs) and whole-chunk timing, dense and SAG."""
    precision = "fp16" if name.endswith("-fp16") else "fp32"
    row: dict[str, Any] = {"precision": precision, "tolerance": TOLERANCE[precision]}
    t0 = time.monotonic()
    amp = contextlib.nullcontext
    try:
        if name == "eager-fp16":  # the eager modules under CUDA autocast: matmuls and convs in fp16
            run_policy, backend, note = policy, None, "eager under torch.autocast(float16)"
            kernels = eager_kernels(policy.denoiser)
            amp = lambda: torch.autocast(device_type=_device_of(policy).type, dtype=torch.float16)  # noqa: E731
        else:
            run_policy, backend, note = _build(name, policy)
            kernels = backend.kernels
    except (MissingDependencyError, ImportError) as exc:
        return {**row, "status": "skipped", "reason": _error(exc)}
    except Exception as exc:
        reason = _error(exc)
        status = "skipped" if name == "tensorrt" and ("CUDA" in reason or "cuda" in reason) else "failed"
        return {**row, "status": status, "reason": reason, "traceback": traceback.format_exc(limit=4)}
    device = _device_of(run_policy)
    row.update(status="ok", device=str(device), build_s=time.monotonic() - t0, note=note)
    if backend is not None:
        row["describe"] = {k: v for k, v in backend.describe().items() if isinstance(v, (str, int, float, bool, list))}
    try:
        moved = _inputs_to(inputs, device)
        for kind in ("dense", "sag"):
            with amp():
                out = denoise(run_policy, moved, kernels, kind, sag).float()
            err = rel_error(out, reference[kind])
            row[kind] = {"rel_error": err, "pass": bool(np.isfinite(err) and err <= TOLERANCE[precision])}
        obs = batch_to(obs_cpu, device)
        image_encoder = backend.encode if backend is not None else None
        if image_encoder is not None:
            with torch.no_grad(), amp():
                compiled = run_policy.encode_observation(obs, image_encoder).float()
                err = rel_error(compiled, run_policy.encode_observation(obs))
            row["encoder"] = {"rel_error": err, "pass": bool(np.isfinite(err) and err <= TOLERANCE[precision])}

        def chunk(kind: str) -> torch.Tensor:
            with amp():
                return whole_chunk(run_policy, kernels, obs, kind, sag, 0, image_encoder)

        row["timing"] = {kind: time_ms(lambda kind=kind: chunk(kind), device, runs, warmup) for kind in ("dense", "sag")}
        row["sag_speedup"] = row["timing"]["dense"]["p50_ms"] / row["timing"]["sag"]["p50_ms"]
        if name == "compile" and device.type == "cuda":  # inductor's kernels inside the step graphs
            row["cuda_graphs"] = cuda_graph_chunks(run_policy, moved, reference, sag, runs, kernels)
    except Exception as exc:
        row.update(status="failed", reason=_error(exc), traceback=traceback.format_exc(limit=4))
    finally:
        if backend is not None:
            backend.close()
    return row


def cuda_graph_chunks(policy: DiffusionPolicy, inputs: ChunkInputs, reference: dict[str, torch.Tensor],
                      sag: SagChunk, runs: int, kernels=None) -> dict[str, Any]:
    """Dense and SAG chunks with every step's blocks replayed from CUDA graphs (one per distinct mask row,
    :class:`~sag_ros.engine.cuda_graphs.StepGraphs`) against launches one by one: error and time.
    ``kernels``: a backend's (e.g. inductor's) kernels; default the eager modules."""
    from sag_ros.engine.cuda_graphs import StepGraphs

    device = _device_of(policy)
    if device.type != "cuda":
        return {"status": "skipped", "reason": f"needs a CUDA device (policy on {device})"}
    try:
        kernels = kernels or eager_kernels(policy.denoiser)
        chunks = {"dense": SagChunk(torch.zeros_like(sag.mask), sag.reuse, False, "dense"), "sag": sag}
        out: dict[str, Any] = {"status": "ok"}
        with torch.no_grad():
            for kind, chunk in chunks.items():
                h = torch.zeros(*inputs.x_init.shape[:2], policy.config.denoiser.d_model, device=device)
                graphs = StepGraphs(kernels.block_fns, chunk.reuse, h, inputs.kv[0])
                t0 = time.perf_counter()
                graphed = reverse_diffusion(policy.schedule, inputs, kernels, graphs.runner(chunk.mask, chunk.hold_x0))
                capture_ms = (time.perf_counter() - t0) * 1e3
                err = rel_error(graphed, reference[kind])
                replay = time_ms(lambda c=chunk, g=graphs: reverse_diffusion(policy.schedule, inputs, kernels,
                                                                              g.runner(c.mask, c.hold_x0)), device, runs, 1)
                eager = time_ms(lambda kind=kind: denoise(policy, inputs, kernels, kind, sag), device, runs, 1)
                out[kind] = {"graphs": graphs.captured, "first_chunk_ms": capture_ms, "rel_error": err,
                             "pass": err <= TOLERANCE["fp32"], "replay": replay, "eager": eager,
                             "speedup": eager["p50_ms"] / replay["p50_ms"]}
        return out
    except Exception as exc:
        return {"status": "failed", "reason": _error(exc), "traceback": traceback.format_exc(limit=4)}


# -- main ----------------------------------------------------------------------------------------------------

def save_report(report: dict, out: Path | None) -> None:
    """Write the report so far: a run cut short by the wall-clock limit still leaves what it measured."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str))


def backend_summary(row: dict[str, Any]) -> str:
    """One log line per backend, so the log alone carries the results when the JSON cannot come back."""
    parts = [row["status"], row.get("reason", "")]
    for kind in ("dense", "sag", "encoder"):
        if kind in row:
            parts.append(f"{kind} err {row[kind]['rel_error']:.1e} pass {row[kind]['pass']}")
    for kind, t in row.get("timing", {}).items():
        parts.append(f"{kind} p50 {t['p50_ms']:.2f} ms p95 {t['p95_ms']:.2f} ms")
    if "build_s" in row:
        parts.append(f"built in {row['build_s']:.1f} s")
    return "; ".join(p for p in parts if p)


def run_check(device: str, backends: list[str], runs: int, warmup: int, policy_path: str | None, config_path: Path,
              sampler: str | None, num_steps: int | None, budget_s: float, cuda_graph: bool, log=print,
              out: Path | None = None, pruner_path: str | None = None) -> dict:
    """Probes, then CUDA graphs (cheap), then each backend in order; the report is saved after each part."""
    start = time.monotonic()
    dev = torch.device(device)
    report: dict[str, Any] = {
        "device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "tolerance": TOLERANCE,
    }
    policy, source = load_check_policy(policy_path, config_path)
    if sampler or num_steps:
        policy.use_sampler(sampler or policy.config.scheduler.kind, num_steps or policy.schedule.num_steps)
    policy = policy.to(dev).eval()
    d = policy.config.denoiser
    report["policy"] = {**source, "layers": d.n_layers, "d_model": d.d_model, "blocks": d.num_blocks,
                        "sampler": policy.schedule.kind.value, "num_steps": policy.schedule.num_steps}
    log(f"[gpu-check] {dev} torch {torch.__version__}; policy {source['source']} ({source['path']}), "
        f"{policy.schedule.kind.value}-{policy.schedule.num_steps}, {d.num_blocks} blocks")

    obs_cpu = random_observation(policy)
    report["device_probe"] = probe_device(policy, obs_cpu)
    bad = {k: v["error"] for k, v in report["device_probe"].items() if not v["ok"]}
    log(f"[gpu-check] device probe: {len(report['device_probe']) - len(bad)} ok, {len(bad)} failed"
        + "".join(f"\n    {k}: {v}" for k, v in bad.items()))

    with torch.no_grad():  # the shared inputs: noise from a generator on the device, memory from eager fp32
        features = policy.encode_observation(batch_to(obs_cpu, dev))
        inputs = prepare_chunk(policy.denoiser, policy.schedule, features, torch.Generator(device=dev).manual_seed(0))
    sag = (pruner_chunk(pruner_path, policy, features) if pruner_path
           else SagChunk(fixed_mask(policy.schedule.num_steps, d.num_blocks)))
    report["mask"] = sag.describe()
    log(f"[gpu-check] SAG chunk: {report['mask']}")
    reference = {kind: denoise(policy, inputs, eager_kernels(policy.denoiser), kind, sag) for kind in ("dense", "sag")}
    save_report(report, out)

    if cuda_graph:
        report["cuda_graphs"] = cuda_graph_chunks(policy, inputs, reference, sag, runs)
    else:
        report["cuda_graphs"] = {"status": "skipped", "reason": "disabled"}
    log(f"[gpu-check] cuda graphs: {report['cuda_graphs']['status']} {report['cuda_graphs'].get('reason', '')}")
    rows: dict[str, Any] = {}
    report["backends"] = rows
    save_report(report, out)
    for name in backends:
        if time.monotonic() - start > budget_s:
            rows[name] = {"status": "skipped", "reason": f"time budget of {budget_s:.0f} s spent"}
            continue
        if name == "eager-fp16" and dev.type != "cuda":
            rows[name] = {"status": "skipped", "reason": "fp16 is checked on CUDA only"}
            continue
        log(f"[gpu-check] backend {name} ...")
        rows[name] = check_backend(name, policy, reference, inputs, obs_cpu, sag, runs, warmup)
        log(f"[gpu-check] backend {name}: {backend_summary(rows[name])}")
        save_report(report, out)
    report["all_equivalent"] = all(r.get(k, {}).get("pass", False) for r in rows.values() if r["status"] == "ok"
                                   for k in ("dense", "sag")) and all(
        r["encoder"]["pass"] for r in rows.values() if "encoder" in r)
    report["elapsed_s"] = time.monotonic() - start
    return report


def format_report(report: dict) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    rows = []
    for name, r in report["backends"].items():
        t = r.get("timing", {})
        rows.append({"backend": name, "status": r["status"], "device": r.get("device", "-"),
                     "prec": r.get("precision", "-"),
                     "dense err": f(r.get("dense", {}).get("rel_error"), ".1e"),
                     "sag err": f(r.get("sag", {}).get("rel_error"), ".1e"),
                     "pass": "-" if "dense" not in r else str(r["dense"]["pass"] and r.get("sag", {}).get("pass", False)
                                                              and r.get("encoder", {}).get("pass", True)),
                     "dense p50/p95 ms": "-" if "dense" not in t else f"{t['dense']['p50_ms']:.2f}/{t['dense']['p95_ms']:.2f}",
                     "sag p50/p95 ms": "-" if "sag" not in t else f"{t['sag']['p50_ms']:.2f}/{t['sag']['p95_ms']:.2f}",
                     "note": (r.get("reason") or r.get("note") or "")[:60]})
    lines = [format_table(rows)]
    graphs = {"eager": report["cuda_graphs"], **{name: r["cuda_graphs"] for name, r in report["backends"].items()
                                                 if "cuda_graphs" in r}}
    for blocks, g in graphs.items():
        if g["status"] == "ok":
            lines += [f"cuda graphs of {blocks} blocks, {kind} chunk ({g[kind]['graphs']} rows captured): replay p50 "
                      f"{g[kind]['replay']['p50_ms']:.2f} ms vs launched one by one {g[kind]['eager']['p50_ms']:.2f} ms "
                      f"({g[kind]['speedup']:.1f}x), rel err {g[kind]['rel_error']:.1e}" for kind in ("dense", "sag")]
        else:
            lines.append(f"cuda graphs of {blocks} blocks: {g['status']} ({g.get('reason', '')})")
    bad = [f"{k} ({v['where']}): {v['error']}" for k, v in report["device_probe"].items() if not v["ok"]]
    lines.append("device probe: " + ("all stages ok" if not bad else "FAILED\n  " + "\n  ".join(bad)))
    return "\n".join(lines)


def default_out() -> Path:
    out = os.environ.get("OUT")
    return Path(out) / "gpu_check.json" if out else Path("runs") / "gpu_check.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: DDIM-10 (unless --num-steps), 3 timed runs; on CPU without compile/tensorrt")
    p.add_argument("--out", type=Path, default=None, help="JSON report (default: $OUT/gpu_check.json or runs/)")
    p.add_argument("--policy", default=None, help="checkpoint (default: the shipped policy, else a fresh one)")
    p.add_argument("--config", type=Path, default=REPO / "config" / "pusht_image.yaml",
                   help="policy config of the fresh fallback policy")
    p.add_argument("--backends", nargs="*", default=None,
                   help=f"default: {' '.join(ALL_BACKENDS)} (+ eager-fp16 on CUDA)")
    p.add_argument("--pruner", default=None,
                   help="time this trained pruner's mask for the check's observation (its reuse and held steps) "
                        "instead of a random 90 %% block mask; the policy's sampler must be the pruner's")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default=None)
    p.add_argument("--num-steps", type=int, default=None)
    p.add_argument("--runs", type=int, default=None, help="timed chunks per method (default 20; quick: 3)")
    p.add_argument("--budget-s", type=float, default=360.0, help="skip further backends after this many seconds")
    p.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"[gpu-check] {exc}", file=sys.stderr)
        return 2
    backends = args.backends
    if backends is None:  # inductor's build is the slowest: last, so a spent budget costs only it
        backends = [b for b in ALL_BACKENDS if b != "compile"] + (["eager-fp16"] if device.type == "cuda" else [])
        backends.append("compile")
        if args.quick and device.type == "cpu":
            backends = ["eager", "onnxruntime", "tensorrt"]  # inductor's C++ build does not fit a quick CPU run
    sampler, num_steps = args.sampler, args.num_steps
    if args.quick and num_steps is None:
        sampler, num_steps = sampler or "ddim", 10
    runs = args.runs or (3 if args.quick else 20)
    torch.manual_seed(0)
    # fp32 means fp32: cuDNN convolutions default to TF32, which put the eager reference itself 1.6e-4 off (H200)
    torch.backends.cudnn.allow_tf32 = False
    out = args.out or default_out()
    report = run_check(str(device), backends, runs, 1 if args.quick else 3, args.policy, args.config, sampler,
                       num_steps, args.budget_s, args.cuda_graph, out=out, pruner_path=args.pruner)
    report["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    save_report(report, out)
    print(format_report(report))
    print(f"[gpu-check] wrote {out} in {report['elapsed_s']:.1f} s; all equivalent: {report['all_equivalent']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
