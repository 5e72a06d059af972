"""DP-T structure: sub-blocks reproduce nn.TransformerDecoderLayer, masks, shapes, one loop = dense forward."""

import numpy as np
import torch
from torch import nn

from sag_ros.policy.blocks import DecoderLayer
from sag_ros.policy.denoiser import causal_masks
from sag_ros.policy.sampling import dense_runner, eager_kernels, prepare_chunk, reverse_diffusion

from conftest import random_observation


def test_three_subblocks_reproduce_torch_decoder_layer():
    torch.manual_seed(0)
    d, heads = 32, 4
    ref = nn.TransformerDecoderLayer(d, heads, dim_feedforward=4 * d, dropout=0.0, activation="gelu",
                                     batch_first=True, norm_first=True).eval()
    ours = DecoderLayer(d, heads, ffn_mult=4, dropout=0.0).eval()
    ours.load_from_torch_layer(ref)
    x, memory = torch.randn(2, 8, d), torch.randn(2, 3, d)
    self_mask, memory_mask = causal_masks(8, 3, causal=True)
    expected = ref(x, memory, tgt_mask=~self_mask, memory_mask=~memory_mask)
    got = ours(x, ours.cross_attn.project_memory(memory), self_mask, memory_mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_causal_masks_follow_dp_t():
    self_mask, memory_mask = causal_masks(4, 3, causal=True)
    assert self_mask.tolist() == [[True, False, False, False], [True, True, False, False],
                                  [True, True, True, False], [True, True, True, True]]
    # token 0 of memory is the step token: visible to all; obs token s visible to action t when t >= s - 1
    assert memory_mask.tolist() == [[True, True, False], [True, True, True], [True, True, True], [True, True, True]]
    assert causal_masks(4, 3, causal=False) == (None, None)


def test_future_actions_do_not_change_past_predictions(tiny_policy):
    den = tiny_policy.denoiser
    x = torch.randn(1, den.config.horizon, 2)
    feats = torch.randn(1, den.config.n_obs_steps, tiny_policy.config.encoder.feature_dim)
    t = torch.tensor([3])
    y = den(x, t, feats)
    x2 = x.clone()
    x2[:, -1] += 5.0
    torch.testing.assert_close(den(x2, t, feats)[:, :-1], y[:, :-1])


def test_batched_condition_loop_equals_per_step_dense_forward(tiny_policy):
    """prepare_chunk (all steps' memory at once) + block functions == calling forward() each step."""
    den, schedule = tiny_policy.denoiser, tiny_policy.schedule
    feats = torch.randn(2, den.config.n_obs_steps, tiny_policy.config.encoder.feature_dim)
    inputs = prepare_chunk(den, schedule, feats, torch.Generator().manual_seed(1))
    fast = reverse_diffusion(schedule, inputs, eager_kernels(den), dense_runner(eager_kernels(den)))
    x = inputs.x_init
    for k, t in enumerate(schedule.timesteps):
        x = schedule.step(k, x, den(x, t.repeat(2), feats), inputs.noise[k])
    torch.testing.assert_close(fast, x, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_chunk_memory_kv_equals_full_condition_and_follows_weight_changes(tiny_policy):
    den, steps = tiny_policy.denoiser, tiny_policy.schedule.timesteps
    feats = torch.randn(2, den.config.n_obs_steps, tiny_policy.config.encoder.feature_dim)
    full = den.memory_kv(den.condition(steps.repeat_interleave(2), feats.repeat(len(steps), 1, 1)))
    expected = full.unflatten(2, (len(steps), 2)).permute(2, 0, 1, 3, 4, 5, 6)  # [K, L, 2, B, nh, S, hs]
    actual = den.chunk_memory_kv(steps, den.observation_kv(feats))
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)
    assert den.step_memory_kv(steps) is den.step_memory_kv(steps)  # cached in eval mode
    den.cond_encoder[0].bias.add_(0.5)  # an in-place weight change (EMA update, load_state_dict) ...
    full = den.memory_kv(den.condition(steps.repeat_interleave(2), feats.repeat(len(steps), 1, 1)))
    expected = full.unflatten(2, (len(steps), 2)).permute(2, 0, 1, 3, 4, 5, 6)
    actual = den.chunk_memory_kv(steps, den.observation_kv(feats))
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)  # ... misses the cache


def test_predict_action_shapes_and_determinism(tiny_policy):
    obs = random_observation(tiny_policy.config, batch=3)
    out1 = tiny_policy.predict_action(obs, torch.Generator().manual_seed(0))
    out2 = tiny_policy.predict_action(obs, torch.Generator().manual_seed(0))
    cfg = tiny_policy.config.denoiser
    assert out1["action"].shape == (3, cfg.n_action_steps, cfg.action_dim)
    assert out1["action_pred"].shape == (3, cfg.horizon, cfg.action_dim)
    torch.testing.assert_close(out1["action"], out2["action"], rtol=0, atol=0)
    # the executed slice starts at the current observation step
    torch.testing.assert_close(out1["action"], out1["action_pred"][:, cfg.n_obs_steps - 1:][:, :cfg.n_action_steps])


def test_a_predictor_returns_ta_actions_or_the_horizon_from_the_current_step(tiny_policy):
    """The inference node publishes the whole predicted horizon from the observation's step on; its first Ta
    actions are the ones DP executes, from the same noise."""
    from sag_ros.predictor import PolicyPredictor

    cfg = tiny_policy.config.denoiser
    obs = {k: v[0].numpy() for k, v in random_observation(tiny_policy.config).items()}
    predictor = PolicyPredictor(tiny_policy)
    executed = predictor(obs, seed=3)
    horizon = predictor(obs, seed=3, num_actions=tiny_policy.actions_from_now())
    assert executed.shape == (cfg.n_action_steps, cfg.action_dim)
    assert horizon.shape == (cfg.horizon - cfg.n_obs_steps + 1, cfg.action_dim)
    np.testing.assert_array_equal(horizon[:cfg.n_action_steps], executed)
