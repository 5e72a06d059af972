"""Every backend installable here against eager, from the same noise: unit by unit and a whole dense chunk.

Equivalence in fp32 within 1e-4 relative error (Polygraphy's comparator idea: same inputs, compare outputs).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import pytest
import torch

from conftest import tiny_config
from sag_ros.engine import BACKENDS, MissingDependencyError, make_backend
from sag_ros.engine.base import build_units
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.sampling import DenoiserKernels, eager_kernels
from sag_ros.sparse.cache import make_cache
from sag_ros.sparse.mask import with_first_step_computed
from sag_ros.sparse.sampler import sparse_runner

RTOL = 1e-4


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm().clamp_min(1e-12)).item()


def on_tensors(kernels: DenoiserKernels, fn):
    """A loop kernel called with tensors: kernels with ``numpy_loop`` get numpy views, and their results (arrays,
    or tuples/sequences of them) come back as tensors."""
    if not kernels.numpy_loop:
        return fn

    def back(out):
        return type(out)(back(item) for item in out) if isinstance(out, (tuple, list)) else torch.from_numpy(out)

    return lambda *args: back(fn(*(a.numpy() for a in args)))


def assert_units_match(policy: DiffusionPolicy, backend) -> None:
    """Each unit on random inputs of its static shape, through the kernels (block signature (h, kv))."""
    g = torch.Generator().manual_seed(3)
    units = build_units(policy.denoiser, encoder=policy.encoder)
    by_name = {unit.name: unit for unit in units}
    eager = policy.denoiser.block_fns()
    blocks = [u for u in units if u.kind is not None]
    kernels = backend.kernels
    with torch.no_grad():
        kv = torch.randn(blocks[1].example_inputs[1].shape, generator=g)
        for j, (unit, fn) in enumerate(zip(blocks, kernels.block_fns)):
            h = torch.randn(unit.example_inputs[0].shape, generator=g)
            err = rel_err(on_tensors(kernels, fn)(h, kv), eager[j](h, kv))
            assert err < RTOL, f"{backend.name} {unit.name}: relative error {err:.2e} vs eager"
        x = torch.randn(by_name["embed"].example_inputs[0].shape, generator=g)
        err = rel_err(on_tensors(kernels, kernels.embed)(x), policy.denoiser.embed(x))
        assert err < RTOL, f"{backend.name} embed: relative error {err:.2e} vs eager"
        h = torch.randn(by_name["output"].example_inputs[0].shape, generator=g)
        err = rel_err(on_tensors(kernels, kernels.output)(h), policy.denoiser.output(h))
        assert err < RTOL, f"{backend.name} output: relative error {err:.2e} vs eager"
        f = torch.randn(by_name["condition"].example_inputs[0].shape, generator=g)
        err = rel_err(backend.kernels.observation_kv(f), policy.denoiser.observation_kv(f))
        assert err < RTOL, f"{backend.name} condition: relative error {err:.2e} vs eager"
        assert_advance_matches(policy, backend, h, x, g)
        if backend.encode is not None:
            image = torch.rand(by_name["encoder"].example_inputs[0].shape, generator=g)
            state = torch.randn(by_name["encoder"].example_inputs[1].shape, generator=g)
            err = rel_err(backend.encode(image, state), policy.encoder({"image": image, "state": state}))
            assert err < RTOL, f"{backend.name} encoder: relative error {err:.2e} vs eager"
        if kernels.fused_blocks is not None:
            assert_fused_matches(eager, on_tensors(kernels, kernels.fused_blocks), h,
                                 torch.stack([kv] * (len(eager) // 3)))


def assert_advance_matches(policy: DiffusionPolicy, backend, h, x, g) -> None:
    """output -> scheduler step -> embed as one call, at a noisy and at the last (clipping, noise-free) step.
    (The eager backend has no such unit: its loop runs the three as they are.)"""
    if backend.kernels.advance is None:
        assert backend.name == "eager"
        return
    den, schedule = policy.denoiser, policy.schedule
    rows = schedule.step_coefficients(h.device, h.dtype)
    noise = torch.randn(x.shape, generator=g)
    advance = on_tensors(backend.kernels, backend.kernels.advance)
    for k in (0, schedule.num_steps - 1):
        x_next, h_next = advance(h, x, noise, rows[k])
        expected = schedule.step(k, x, den.output(h), noise)
        assert rel_err(x_next, expected) < RTOL, f"{backend.name} advance at step {k}: x vs eager"
        assert rel_err(h_next, den.embed(expected)) < RTOL, f"{backend.name} advance at step {k}: h vs eager"


def assert_fused_matches(eager, fused, h, kv) -> None:
    """The fused step's final stream and every block delta against eager blocks run in order."""
    final, deltas = fused(h, kv)
    assert len(deltas) == len(eager)
    for j, (fn, delta) in enumerate(zip(eager, deltas)):
        expected = fn(h, kv[j // 3])
        err = rel_err(delta, expected)
        assert err < RTOL, f"fused block {j}: relative error {err:.2e} vs eager"
        h = h + expected
    assert rel_err(final, h) < RTOL


def assert_sample_matches(policy: DiffusionPolicy, features: torch.Tensor, backend) -> None:
    expected = policy.sample(features, torch.Generator().manual_seed(7))
    actual = policy.sample(features, torch.Generator().manual_seed(7), kernels=backend.kernels)
    err = rel_err(actual, expected)
    assert err < RTOL, f"{backend.name}: dense reverse diffusion relative error {err:.2e} vs eager"


def assert_sparse_matches(policy: DiffusionPolicy, features: torch.Tensor, backend) -> None:
    """A SAG mask (some rows fully computed, so the fused call runs if the backend has one) against eager."""
    k, n = policy.schedule.num_steps, policy.config.denoiser.num_blocks
    mask = with_first_step_computed(torch.rand(k, n, generator=torch.Generator().manual_seed(1)) < 0.6)
    mask[k // 2] = False
    calls = []
    kernels = backend.kernels
    if kernels.fused_blocks is not None:
        kernels = replace(kernels, fused_blocks=lambda h, kv: calls.append(1) or backend.kernels.fused_blocks(h, kv))

    def chunk(kernels, hold_x0=False):
        return policy.sample(features, torch.Generator().manual_seed(7),
                             sparse_runner(kernels, mask, make_cache("one_for_all", n), hold_x0), kernels)

    err = rel_err(chunk(kernels), chunk(eager_kernels(policy.denoiser)))
    assert err < RTOL, f"{backend.name}: sparse reverse diffusion relative error {err:.2e} vs eager"
    assert len(calls) == (2 if backend.fuse else 0)  # the two all-compute rows
    mask[2:4] = True  # wholly pruned steps, the last one too: held steps, then a step that embeds again
    mask[k - 1] = True
    err = rel_err(chunk(kernels, hold_x0=True), chunk(eager_kernels(policy.denoiser), hold_x0=True))
    assert err < RTOL, f"{backend.name}: reverse diffusion with held steps, relative error {err:.2e} vs eager"


def test_eager_backend_is_the_reference(policy, features):
    with make_backend("eager", policy.denoiser, encoder=policy.encoder) as backend:
        assert_units_match(policy, backend)
        assert_sample_matches(policy, features, backend)
        assert backend.describe()["backend"] == "eager"


@pytest.mark.slow
def test_compile_backend_matches_eager(policy, features):
    # warmup compiles ~6 graphs (inductor, CPU); keep_faster=False: every compiled unit is what gets checked
    with make_backend("compile", policy.denoiser, keep_faster=False, encoder=policy.encoder) as backend:
        assert_units_match(policy, backend)
        assert_sample_matches(policy, features, backend)
        assert_sparse_matches(policy, features, backend)
        assert backend.describe()["dynamic"] is False


def test_keep_faster_units_runs_eager_where_the_compiled_call_is_slower(policy):
    backend = make_backend("eager", policy.denoiser)
    fns = backend.unit_fns()
    embed = fns["embed"]
    fns["embed"] = lambda x: time.sleep(5e-4) or embed(x)  # a "compiled" embed with a 0.5 ms call overhead
    output_unit = next(u for u in backend.units if u.name == "output")
    with torch.no_grad():
        ready = output_unit.module(*output_unit.example_inputs)
    fns["output"] = fast_output = lambda h: ready  # a "compiled" head faster than eager's: it must stay
    backend._bind(fns)
    backend.keep_faster_units(calls=40)
    assert "embed" in backend.describe()["eager_groups"] and "output" not in backend.describe()["eager_groups"]
    assert backend.kernels.embed is next(u.module for u in backend.units if u.name == "embed")
    assert backend.kernels.output is fast_output


def test_unknown_backend_name_is_refused(policy):
    with pytest.raises(ValueError, match=r"unknown inference backend 'tensorrtx'.*choose one of"):
        make_backend("tensorrtx", policy.denoiser)
    assert set(BACKENDS) == {"eager", "compile", "onnxruntime", "tensorrt"}


def test_training_mode_denoiser_is_refused():
    denoiser = DiffusionPolicy(tiny_config()).denoiser.train()
    with pytest.raises(ValueError, match="eval"):
        make_backend("eager", denoiser)


@pytest.mark.parametrize("name, module", [("onnxruntime", "onnxruntime"), ("tensorrt", "torch_tensorrt")])
def test_missing_library_names_the_package(policy, monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(MissingDependencyError, match=rf"{module}.*pip install -e \.\[engine\]"):
        make_backend(name, policy.denoiser)
