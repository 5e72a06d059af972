"""The masks-by-task study (tools/masks_by_task_study.py): masks are counted as whole masks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from sag_ros.sparse.mask import computed_steps
from sag_ros.sparse.pruner import Pruner, PrunerConfig

_spec = importlib.util.spec_from_file_location("masks_by_task_study",
                                               Path(__file__).parents[1] / "tools" / "masks_by_task_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def test_distinct_masks_count_whole_masks():
    torch.manual_seed(0)
    config = PrunerConfig(num_steps=6, num_blocks=6, obs_feature_dim=8, index_dim=8, obs_dim=8, hidden_dim=16)
    features = torch.randn(12, 8) * 3
    pruner = Pruner(config).eval()
    conditioned = study.distinct_masks(pruner, features)
    unique, counts = torch.unique(pruner.predict_mask(features), dim=0, return_counts=True)
    assert len(unique) > 1  # these features do get different masks
    assert sorted(n for _, n in conditioned) == sorted(counts.tolist())
    assert [n for _, n in conditioned] == sorted(counts.tolist(), reverse=True)  # most common first
    assert {m.tobytes() for m, _ in conditioned} == {m.numpy().tobytes() for m in unique}
    static = study.distinct_masks(Pruner(PrunerConfig(**{**config.__dict__, "use_observation": False})).eval(), features)
    assert len(static) == 1 and static[0][1] == 12 and static[0][0].shape == (6, 6)


def test_computed_steps_and_ranges():
    mask = np.ones((8, 3), dtype=bool)
    mask[[0, 1, 2, 5, 7], 0] = False
    assert computed_steps(mask.tolist()) == [0, 1, 2, 5, 7]
    assert study.step_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert study.step_ranges([]) == ""


def test_write_pinned_saves_the_pruner_pinned_to_the_given_mask_with_its_run_settings(tmp_path, tiny_policy):
    from conftest import between_middle_margins, random_observation
    from sag_ros.sparse.artifact import load_pruner
    from sag_ros.sparse.train_pruner import PrunerTrainConfig, pruner_config_for

    torch.manual_seed(0)
    pruner = Pruner(pruner_config_for(tiny_policy, PrunerTrainConfig())).eval()
    with torch.no_grad():
        features = tiny_policy.encode_observation(random_observation(tiny_policy.config, batch=8, seed=1)).flatten(1)
        features = features * torch.linspace(-3, 3, 8)[:, None]
        logits = pruner.logits(features)  # centre the prune logit so that these observations get different masks
        pruner.mlp[-1].bias[1] -= between_middle_margins(logits)
    masks = pruner.predict_mask(features).numpy()
    target = masks[5]
    assert not (masks == target).all()

    out = tmp_path / "pinned.pt"
    study.write_pinned(pruner, {"reuse": "per_block", "hold_x0": True}, tiny_policy, features, target, out, "obs 5")
    pinned, extra = load_pruner(out, tiny_policy)
    assert (pinned.predict_mask(features).numpy() == target).all()
    assert extra["reuse"] == "per_block" and extra["hold_x0"] is True and extra["pinned_to"] == "obs 5"
    assert extra["computed_steps"] == computed_steps(target.tolist())
    assert extra["computed_blocks"] == int((~target).sum())
