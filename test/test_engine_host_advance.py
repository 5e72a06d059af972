"""The numba ``advance`` kernel against the eager unit it replaces (batch 2, clipping, DDPM and DDIM steps)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace

import pytest
import torch

from conftest import tiny_config
from sag_ros.engine import host_advance
from sag_ros.engine.base import ADVANCE, build_units
from sag_ros.policy.config import SchedulerKind
from sag_ros.policy.policy import DiffusionPolicy
from sag_ros.policy.scheduler import NoiseSchedule

# Skipped only where numba is not installed: an installed numba that fails to import fails these tests.
needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                 reason="numba not installed (pip install -e .[engine])")


def _advance_unit(policy: DiffusionPolicy, batch_size: int):
    return next(unit for unit in build_units(policy.denoiser, batch_size) if unit.name == ADVANCE)


@needs_numba
@pytest.mark.parametrize("kind", [SchedulerKind.DDPM, SchedulerKind.DDIM])
def test_numba_advance_matches_the_eager_unit(kind):
    config = tiny_config()
    config = replace(config, scheduler=replace(config.scheduler, kind=kind, num_inference_steps=5))
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).eval()
    with torch.no_grad():  # LayerNorm and biases away from their (1, 0) init, so every parameter matters
        for parameter in policy.denoiser.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    unit = _advance_unit(policy, batch_size=2)
    kernel = host_advance.NumbaAdvance.from_unit(unit.module)
    schedule = NoiseSchedule.from_config(config.scheduler)
    g = torch.Generator().manual_seed(1)
    h = 3.0 * torch.randn(unit.example_inputs[0].shape, generator=g)
    x = 2.0 * torch.randn(unit.example_inputs[1].shape, generator=g)  # |x0| > 1 somewhere: clipping is exercised
    noise = torch.randn(x.shape, generator=g) if schedule.needs_noise else torch.zeros_like(x)
    with torch.no_grad():
        for k, row in enumerate(schedule.step_coefficients(h.device, h.dtype)):
            expected = unit.module(h, x, noise, row)
            actual = kernel(h, x, noise, row)
            assert actual.shape == expected.shape and actual.dtype == expected.dtype
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5, msg=f"step {k}")
    x0 = x * float(row[0]) - policy.denoiser.output(h) * float(row[1])
    assert schedule.clip_sample and (x0.abs() > 1).any(), "the test inputs never reach the clip bounds"


@needs_numba
def test_numba_advance_needs_an_affine_layer_norm():
    torch.manual_seed(0)
    unit = _advance_unit(DiffusionPolicy(tiny_config()).eval(), batch_size=1)
    output = unit.module.output
    output.ln_f = torch.nn.LayerNorm(output.ln_f.normalized_shape, elementwise_affine=False)
    with pytest.raises(ValueError, match="affine weight and bias"):
        host_advance.NumbaAdvance.from_unit(unit.module)


def test_a_numba_that_does_not_import_counts_as_absent(monkeypatch, caplog):
    """An installed numba built for another NumPy raises ImportError on import: the backend then keeps the graph."""
    monkeypatch.setattr(host_advance.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    assert not host_advance.available()
    assert "does not import" in caplog.text
