"""Per-call cost of one unit (SA, CA, FFN of layer 0) per backend, at the shipped size and batch 1.

With most blocks pruned a SAG step is a handful of tiny calls, so the fixed cost of a call (guards,
binding, allocation) matters as much as the math. Run ``python -m sag_ros.engine.overhead``; it prints
medians and p95 in microseconds, one thread everywhere (torch and onnxruntime). Takes well under a minute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from sag_ros.engine import make_backend
from sag_ros.engine.base import Backend, MissingDependencyError
from sag_ros.policy.config import DenoiserConfig
from sag_ros.policy.denoiser import TransformerDenoiser

UNITS = ("layer0.sa", "layer0.ca", "layer0.ffn")


def shipped_denoiser() -> TransformerDenoiser:
    cfg = DenoiserConfig(d_model=128, n_layers=8, horizon=16, n_heads=4, n_obs_steps=2)
    torch.manual_seed(0)
    return TransformerDenoiser(cfg, obs_feature_dim=66).eval()


def time_calls(fn: Callable[[], torch.Tensor], calls: int) -> list[float]:
    """Microseconds of each of ``calls`` calls, after a short warm-up."""
    for _ in range(20):
        fn()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        fn()
        samples.append((clock() - start) / 1e3)
    return samples


def measure(backend: Backend, calls: int) -> dict[str, tuple[float, float]]:
    """Unit name -> (median, p95) microseconds per call, through the kernels' block signature."""
    units = {u.name: u for u in backend.units}
    index = {u.name: j for j, u in enumerate(u for u in backend.units if u.kind is not None)}
    out = {}
    with torch.no_grad():
        for name in UNITS:
            unit, fn = units[name], backend.kernels.block_fns[index[name]]
            h = torch.randn(unit.example_inputs[0].shape)
            kv = torch.randn(2, *unit.example_inputs[-1].shape[1:]) if len(unit.example_inputs) == 2 else h
            samples = sorted(time_calls(lambda: fn(h, kv), calls))
            out[name] = (statistics.median(samples), samples[int(0.95 * (len(samples) - 1))])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", default=["eager", "compile", "onnxruntime", "onnxruntime-iobinding"])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    denoiser = shipped_denoiser()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for label in args.backends:
            name, options = label, {}
            if label == "onnxruntime-iobinding":  # IO binding on CPU (the default there is session.run)
                name, options = "onnxruntime", {"io_binding": True}
            start = time.perf_counter()
            try:
                # warmup=False: only the three measured units get called (compile then builds 3 graphs, not 5)
                backend = make_backend(name, denoiser, 1, Path(cache) if name == "onnxruntime" else None,
                                       warmup=False, **options)
            except MissingDependencyError as exc:
                print(f"{label}: skipped ({exc})")
                continue
            with backend:
                result = measure(backend, args.calls)
            rows.append((label, time.perf_counter() - start, result))
    print(f"\nper-call µs, batch 1, 1 thread, d_model 128, 8 layers, horizon 16, 4 heads, obs steps 2 "
          f"(median / p95 of {args.calls} calls)")
    print(f"{'backend':<22}" + "".join(f"{n.split('.')[1].upper():>16}" for n in UNITS) + f"{'setup s':>10}")
    for label, setup, result in rows:
        cells = "".join(f"{f'{m:.1f} / {p:.1f}':>16}" for m, p in (result[n] for n in UNITS))
        print(f"{label:<22}{cells}{setup:>10.1f}")


if __name__ == "__main__":
    main()
