"""The trainer: a tiny policy overfits a handful of demonstrations; runs resume (after a time limit too, to the
same weights); mismatches and unusable devices are refused."""

import dataclasses

import numpy as np
import pytest
import torch

from sag_ros.policy.checkpoint import CheckpointError, load_policy
from sag_ros.policy.data import WindowSampler
from sag_ros.policy.device import resolve_device
from sag_ros.policy.train import Deadline, TrainConfig, lr_factor, train_policy

from conftest import tiny_config


def _demo_sampler(data_hash="demo"):
    """Two 12-step 'episodes': a point moving on a straight line; the action is its next position."""
    t = np.arange(13, dtype=np.float32)[:, None]
    tracks = [np.array([100.0, 100.0]) + t * [20.0, 10.0], np.array([400.0, 400.0]) - t * [15.0, 25.0]]
    keypoints = np.zeros((24, 18), dtype=np.float32)
    keypoints[:, :2] = np.concatenate([track[:-1] for track in tracks])
    keypoints[:12, 2], keypoints[12:, 2] = 1.0, -1.0  # which episode
    action = np.concatenate([track[1:] for track in tracks]).astype(np.float32)
    return WindowSampler({"keypoints": keypoints, "action": action}, np.array([12, 24]), n_obs_steps=2,
                         horizon=8, n_action_steps=4, data_hash=data_hash)


def _lowdim_config():
    cfg = tiny_config(encoder_kind="lowdim")
    return dataclasses.replace(cfg, scheduler=dataclasses.replace(cfg.scheduler, kind="ddim", num_inference_steps=10))


def test_tiny_policy_overfits_a_handful_of_demos(tmp_path):
    sampler = _demo_sampler()
    train = TrainConfig(num_steps=1000, batch_size=32, lr=3e-3, warmup_steps=20, checkpoint_every=1000, threads=1,
                        ema_max_decay=0.99)
    path = train_policy(_lowdim_config(), train, sampler, tmp_path / "run", log_every=100)
    policy, meta = load_policy(path)
    assert meta["data_hash"] == "demo" and meta["extra"]["train_step"] == 1000
    obs, action = sampler.sample(16, torch.Generator().manual_seed(1))
    predicted = policy.predict_action(obs, torch.Generator().manual_seed(0))["action_pred"]
    error = (predicted - action).abs().mean().item()
    spread = (action - action.mean(dim=(0, 1))).abs().mean().item()
    assert error < 0.25 * spread, f"mean abs error {error:.1f} px vs data spread {spread:.1f} px"


def test_training_resumes_and_refuses_other_data(tmp_path):
    sampler = _demo_sampler()
    run = tmp_path / "run"
    train = TrainConfig(num_steps=6, batch_size=4, warmup_steps=2, checkpoint_every=3, threads=1)
    train_policy(_lowdim_config(), dataclasses.replace(train, num_steps=3), sampler, run)
    train_policy(_lowdim_config(), train, sampler, run)
    _, meta = load_policy(run / "policy.pt")
    assert meta["extra"]["train_step"] == 6
    with pytest.raises(CheckpointError, match="other data"):
        train_policy(_lowdim_config(), dataclasses.replace(train, num_steps=9), _demo_sampler("changed"), run)


def test_warm_start_takes_the_checkpoint_weights_and_refuses_another_config(tmp_path):
    sampler = _demo_sampler()
    train = TrainConfig(num_steps=3, batch_size=4, warmup_steps=1, checkpoint_every=3, threads=1)
    source = train_policy(_lowdim_config(), train, sampler, tmp_path / "a")
    # One step at a negligible learning rate: the new run's policy is the source's weights, not a fresh init.
    still = dataclasses.replace(train, num_steps=1, lr=1e-12)
    warm = train_policy(_lowdim_config(), still, sampler, tmp_path / "b", init_from=source)
    cold = train_policy(_lowdim_config(), dataclasses.replace(still, seed=1), sampler, tmp_path / "c")
    expected = load_policy(source)[0].state_dict()
    for name, value in load_policy(warm)[0].state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0)
    assert any(not torch.allclose(v, expected[k]) for k, v in load_policy(cold)[0].state_dict().items())
    other = dataclasses.replace(_lowdim_config(), denoiser=dataclasses.replace(_lowdim_config().denoiser, n_layers=1))
    with pytest.raises(CheckpointError, match="does not match"):
        train_policy(other, still, sampler, tmp_path / "d", init_from=source)


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)


def test_a_time_limit_stops_at_a_checkpoint_and_the_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, capsys):
    """Batches, noise and dropout included (with attention dropout on, dropout's global RNG is kept too)."""
    config = _lowdim_config()
    config = dataclasses.replace(config, denoiser=dataclasses.replace(config.denoiser, p_drop_attn=0.1))
    sampler = _demo_sampler()
    train = TrainConfig(num_steps=5, batch_size=4, warmup_steps=2, checkpoint_every=100, threads=1)
    whole = train_policy(config, train, sampler, tmp_path / "whole")
    cut = tmp_path / "cut"
    train_policy(config, train, sampler, cut, deadline=Deadline(1e-9))  # passed after the first step
    assert "stopped by the 1e-09 min limit at step 1 of 5" in capsys.readouterr().out
    assert load_policy(cut / "policy.pt")[1]["extra"]["train_step"] == 1
    torch.manual_seed(123)  # the resumed run restores the global RNG itself
    resumed = train_policy(config, train, sampler, cut)
    expected = load_policy(whole)[0].state_dict()
    for name, value in load_policy(resumed)[0].state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=0, rtol=0)
    with pytest.raises(ValueError, match="must be > 0"):
        Deadline(0)


def test_a_device_torch_cannot_use_is_refused_naming_why():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="training runs on 'cpu' or 'cuda"):
        resolve_device("meta")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ValueError, match="sees no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="training on a GPU needs a CUDA device")
def test_training_on_cuda_writes_checkpoints_that_load_and_resume_anywhere(tmp_path):
    sampler = _demo_sampler()
    train = TrainConfig(num_steps=4, batch_size=4, warmup_steps=1, checkpoint_every=2, threads=1)
    run = tmp_path / "run"
    train_policy(_lowdim_config(), dataclasses.replace(train, num_steps=2), sampler, run, device=torch.device("cuda"))
    path = train_policy(_lowdim_config(), train, sampler, run)  # resumed on the CPU
    policy, meta = load_policy(path)
    assert meta["extra"]["train_step"] == 4
    assert all(value.device.type == "cpu" for value in policy.state_dict().values())
