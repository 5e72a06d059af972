"""Checkpoints round-trip, and wrong, truncated or foreign files are refused with a clear message."""

import pytest
import torch

from sag_ros.policy.checkpoint import CheckpointError, atomic_torch_save, load_policy, save_policy

from conftest import random_observation, tiny_config


def test_roundtrip_keeps_outputs_and_normalizer(tmp_path, tiny_policy):
    tiny_policy.normalizer["action"].fit(torch.rand(100, 2) * 512)
    path = tmp_path / "p.pt"
    save_policy(tiny_policy, path, data_hash="abc")
    loaded, meta = load_policy(path, expected_config=tiny_policy.config)
    assert meta["data_hash"] == "abc"
    obs = random_observation(tiny_policy.config)
    a = tiny_policy.predict_action(obs, torch.Generator().manual_seed(0))["action"]
    b = loaded.predict_action(obs, torch.Generator().manual_seed(0))["action"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fp16_checkpoint_loads_as_fp32(tmp_path, tiny_policy):
    path = tmp_path / "p16.pt"
    save_policy(tiny_policy, path, data_hash="x", half=True)
    loaded, _ = load_policy(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    observation = random_observation(tiny_policy.config)
    # the same actions up to fp16 rounding of the weights (and the normalizer kept: it is not rounded away)
    expected = tiny_policy.predict_action(observation, generator=torch.Generator().manual_seed(0))["action_pred"]
    actual = loaded.predict_action(observation, generator=torch.Generator().manual_seed(0))["action_pred"]
    scale = expected.abs().max()
    assert (actual - expected).abs().max() < 1e-2 * scale, ((actual - expected).abs().max(), scale)


def test_truncated_checkpoint_is_refused(tmp_path, tiny_policy):
    path = tmp_path / "p.pt"
    save_policy(tiny_policy, path, data_hash="x")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupted"):
        load_policy(path)


def test_missing_foreign_and_other_version_are_refused(tmp_path, tiny_policy):
    with pytest.raises(CheckpointError, match="no such file"):
        load_policy(tmp_path / "nope.pt")
    atomic_torch_save({"format": "something.else"}, tmp_path / "f.pt")
    with pytest.raises(CheckpointError, match="expected a 'sag_ros.policy' file"):
        load_policy(tmp_path / "f.pt")
    atomic_torch_save({"format": "sag_ros.policy", "version": 99}, tmp_path / "v.pt")
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        load_policy(tmp_path / "v.pt")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch file"):
        load_policy(tmp_path / "notes.txt")


def test_config_mismatch_is_refused(tmp_path, tiny_policy):
    path = tmp_path / "p.pt"
    save_policy(tiny_policy, path, data_hash="x")
    other = tiny_config(scheduler_steps=20)
    with pytest.raises(CheckpointError, match="does not match the requested config"):
        load_policy(path, expected_config=other)


def test_a_checkpoint_without_its_weights_is_refused_by_name(tmp_path, tiny_policy):
    path = tmp_path / "p.pt"
    save_policy(tiny_policy, path, data_hash="x")
    payload = torch.load(path, weights_only=True)
    torch.save({k: v for k, v in payload.items() if k != "state_dict"}, path)
    with pytest.raises(CheckpointError, match=r"lacks \['state_dict'\]"):
        load_policy(path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, tiny_policy):
    path = tmp_path / "p.pt"
    save_policy(tiny_policy, path, data_hash="x")
    payload = torch.load(path, weights_only=True)
    payload["config"]["denoiser"]["d_model"] = 64
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit the stored config"):
        load_policy(path)


def test_bad_observation_is_refused(tiny_policy):
    obs = random_observation(tiny_policy.config)
    bad = dict(obs, image=obs["image"][:, :, :-1])
    with pytest.raises(ValueError, match="'image' has shape"):
        tiny_policy.predict_action(bad)
    nan = dict(obs, state=obs["state"].clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        tiny_policy.predict_action(nan)
    with pytest.raises(ValueError, match="missing 'image'"):
        tiny_policy.predict_action({"state": obs["state"]})
