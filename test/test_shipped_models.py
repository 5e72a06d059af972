"""The checkpoints in models/ load: every pruner against the policy its name starts with (its weights fingerprint
and sampler are checked on load), and the default pruner against the default policy, as `sag-bringup` pairs them."""

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from sag_ros.policy import checkpoint
from sag_ros.policy.checkpoint import load_policy
from sag_ros.resources import default_policy_path, default_pruner_path, share_dir
from sag_ros.sim.task import get_task
from sag_ros.sparse import artifact
from sag_ros.sparse.artifact import load_pruner, pruner_sampler

MODELS = share_dir() / "models"
FILES = {p: torch.load(p, map_location="cpu", weights_only=True, mmap=True)
         for p in sorted(MODELS.glob("*.pt")) if not p.name.endswith(".train_state.pt")}  # training's resume files
POLICIES = [p for p, saved in FILES.items() if saved["format"] == checkpoint.FORMAT]
PRUNERS = [p for p, saved in FILES.items() if saved["format"] == artifact.FORMAT]
OBSERVATION_PRUNERS = [p for p in PRUNERS if FILES[p]["config"]["use_observation"]]  # static masks are planned once


@functools.lru_cache(maxsize=None)
def shipped_policy(path: Path):
    """Loaded once per file; each test sets the sampler it needs."""
    return load_policy(path)[0]


def policy_of(pruner: Path) -> Path:
    """The policy a pruner file is named after: the longest policy stem its name starts with."""
    return max((p for p in POLICIES if pruner.stem.startswith(p.stem + "_")), key=lambda p: len(p.stem))


def test_every_file_in_models_is_a_policy_or_a_pruner_and_the_defaults_are_there():
    assert len(POLICIES) + len(PRUNERS) == len(FILES), FILES
    assert default_policy_path() in POLICIES and default_pruner_path() in PRUNERS


@pytest.mark.parametrize("pruner_path", PRUNERS, ids=lambda p: p.stem)
def test_every_shipped_pruner_loads_against_its_policy(pruner_path):
    policy = shipped_policy(policy_of(pruner_path))
    policy.use_sampler(*pruner_sampler(pruner_path))
    pruner, extra = load_pruner(pruner_path, policy)
    assert extra["reuse"] in ("one_for_all", "per_block")
    assert pruner.config.num_steps == policy.schedule.num_steps


def test_the_default_pruner_belongs_to_the_default_policy():
    assert policy_of(default_pruner_path()) == default_policy_path()  # and it loads: the parametrized test above


@pytest.mark.parametrize("pruner_path", OBSERVATION_PRUNERS, ids=lambda p: p.stem)
def test_every_observation_conditioned_pruner_plans_the_same_masks_through_the_certificate(pruner_path):
    """The planners' certified head on the real weights (their Lipschitz constants, their margins): the full head's
    masks along a drifting sequence of observations, wherever the full head's margin is not a float-rounding tie.
    The drift covers a tenth of the way between two random observations, in steps small enough for consecutive
    control chunks, so that both the certified and the re-anchoring path run."""
    from conftest import random_observation
    from sag_ros.sparse.certified_head import CertifiedMaskHead

    policy = shipped_policy(policy_of(pruner_path))
    policy.use_sampler(*pruner_sampler(pruner_path))
    pruner, _ = load_pruner(pruner_path, policy)
    with torch.no_grad():
        ends = [policy.encode_observation(random_observation(policy.config, seed=s)) for s in (0, 1)]
        head = pruner.mask_head()
        certified = CertifiedMaskHead(head)
        for t in torch.linspace(0, 0.1, 30):
            features = ends[0] + (ends[1] - ends[0]) * t
            logits = pruner.logits(features)
            decided = (logits[..., 1] - logits[..., 0]).abs() > 1e-4
            decided[:, 0] = True
            assert torch.equal(certified(features)[decided], head(features)[decided])
    assert certified.stats()["full_evaluations"] < certified.stats()["calls"]


def test_the_default_pair_predicts_with_held_steps():
    """What `sag-bringup` runs: the default pruner was trained for held steps, so its predictor holds them, and a
    chunk comes out finite with the pruner's fraction of blocks computed."""
    from conftest import random_observation
    from sag_ros.predictor import PredictorSpec

    predictor = PredictorSpec(str(default_policy_path()), pruner_path=str(default_pruner_path()))()
    config = predictor.policy.config
    observation = random_observation(config)
    actions = predictor({k: v[0].numpy() for k, v in observation.items()}, seed=0)
    assert actions.shape == (config.denoiser.n_action_steps, config.denoiser.action_dim)
    task = get_task(config.task)
    low, high = np.array(task.action_low), np.array(task.action_high)
    slack = 0.05 * (high - low)  # the inference node's default action_margin
    assert np.isfinite(actions).all() and (low - slack <= actions).all() and (actions <= high + slack).all(), actions
    runner, fraction = predictor.planner.plan(predictor.policy.encode_observation(observation))
    assert runner.held_steps is not None and sum(runner.held_steps) == round((1 - fraction) * len(runner.held_steps))
