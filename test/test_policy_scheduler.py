"""The precomputed DDPM/DDIM coefficients agree with diffusers' schedulers on the same inputs, and the update
as data (what compiled backends run) agrees with the update as code."""

import pytest
import torch

from sag_ros.policy.config import SchedulerConfig
from sag_ros.policy.scheduler import NoiseSchedule, reverse_update, squared_cosine_betas

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test-only reference (pip install -e .[test])")

SHAPE = (3, 16, 2)


def _compare(schedule: NoiseSchedule, ref) -> None:
    """Run both reverse processes on the same model outputs and the same per-step noise."""
    g = torch.Generator().manual_seed(0)
    ours = theirs = torch.randn(SHAPE, generator=g)
    coefficients = schedule.step_coefficients(torch.device("cpu"), torch.float32)
    for k, t in enumerate(ref.timesteps):
        assert int(t) == int(schedule.timesteps[k])
        eps = torch.randn(SHAPE, generator=g) * 0.5
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1000 + k))
        if not schedule.needs_noise:
            noise = torch.zeros(SHAPE)  # what the sampler feeds compiled units for DDIM
        as_data = reverse_update(ours, eps, noise, coefficients[k])
        ours = schedule.step(k, ours, eps, noise if schedule.needs_noise else None)
        torch.testing.assert_close(as_data, ours, rtol=1e-6, atol=1e-6)
        theirs = ref.step(eps, t, theirs, generator=torch.Generator().manual_seed(1000 + k)).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_betas_match_diffusers():
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    torch.testing.assert_close(squared_cosine_betas(100), ref.betas, rtol=0, atol=1e-7)


def test_ddpm_100_matches_diffusers():
    schedule = NoiseSchedule.from_config(SchedulerConfig(num_train_steps=100, num_inference_steps=100))
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                                  prediction_type="epsilon", variance_type="fixed_small")
    ref.set_timesteps(100)
    _compare(schedule, ref)


@pytest.mark.parametrize("k_steps", [10, 30])
def test_ddim_matches_diffusers(k_steps):
    schedule = NoiseSchedule.from_config(SchedulerConfig(kind="ddim", num_train_steps=100, num_inference_steps=k_steps))
    ref = diffusers.DDIMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                                  set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon")
    ref.set_timesteps(k_steps)
    _compare(schedule, ref)


def test_add_noise_matches_diffusers():
    schedule = NoiseSchedule.from_config(SchedulerConfig())
    ref = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([0, 10, 99])
    torch.testing.assert_close(schedule.add_noise(x0, noise, t), ref.add_noise(x0, noise, t))


def test_step_goes_through_the_clipped_x0_prediction():
    schedule = NoiseSchedule.from_config(SchedulerConfig(num_train_steps=100, num_inference_steps=10))
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 3, generator=g) * 3, torch.randn(2, 4, 3, generator=g)
    x0 = schedule.predict_x0(0, x, eps)
    assert x0.abs().max() <= 1.0
    from_x, from_eps = schedule.x0_from_x[0], schedule.x0_from_eps[0]
    torch.testing.assert_close(x0, (x * from_x - eps * from_eps).clamp(-1, 1))
    torch.testing.assert_close(schedule.step(0, x, eps, torch.zeros_like(x)),
                               x0 * schedule.coef_x0[0] + x * schedule.coef_x[0])


def test_update_as_data_clips_only_when_the_schedule_does():
    x, eps = torch.full(SHAPE, 40.0), torch.zeros(SHAPE)
    for clip in (True, False):
        schedule = NoiseSchedule.from_config(SchedulerConfig(kind="ddim", num_inference_steps=10, clip_sample=clip))
        row = schedule.step_coefficients(torch.device("cpu"), torch.float32)[3]
        torch.testing.assert_close(reverse_update(x, eps, torch.zeros(SHAPE), row), schedule.step(3, x, eps, None))


def test_noise_scale_multiplies_only_ddpm_fresh_noise():
    plain, half = (NoiseSchedule.from_config(SchedulerConfig(noise_scale=scale)) for scale in (1.0, 0.5))
    torch.testing.assert_close(half.coef_noise, plain.coef_noise * 0.5)
    for name in ("coef_x0", "coef_x", "coef_eps", "x0_from_x", "x0_from_eps"):
        assert torch.equal(getattr(half, name), getattr(plain, name))
    silent = NoiseSchedule.from_config(SchedulerConfig(noise_scale=0.0))
    x, eps, z = torch.randn(3, 2, 4, 2).unbind(0)
    assert torch.equal(silent.step(5, x, eps, z), silent.step(5, x, eps, torch.zeros_like(z)))  # the posterior mean
    with pytest.raises(ValueError, match="noise_scale"):
        SchedulerConfig(noise_scale=-0.1)
    with pytest.raises(ValueError, match="DDIM .* draws none"):  # it would change nothing: refused, not ignored
        SchedulerConfig(kind="ddim", num_inference_steps=10, noise_scale=0.5)
