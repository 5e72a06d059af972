"""The adaptive-budget study (tools/adaptive_budget_study.py): its per-window choice must respect the budget and pick
where the extra steps pay most, and its closed-loop oracle must execute the schedule its cost rule names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from conftest import random_observation
from sag_ros.predictor import PolicyPredictor
from sag_ros.sparse.mask import interval_mask

_spec = importlib.util.spec_from_file_location("adaptive_budget_study",
                                               Path(__file__).parents[1] / "tools" / "adaptive_budget_study.py")
study = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(study)


def test_choice_spends_the_budget_where_the_costly_schedule_gains_most():
    # two schedules (5 and 15 steps), one draw, four windows: the costly one gains 0.5, 0.1, 0.0 and 0.3
    errors = np.array([[[1.0, 0.2, 0.1, 0.6]], [[0.5, 0.1, 0.1, 0.3]]])
    steps = np.array([5.0, 15.0])
    err, used, lam = study.lagrangian_choice(errors, steps, budget=10.0, chosen_on=lambda e, d: e[:, d])
    assert used == 10.0  # two of four windows on the costly schedule: the first and the last
    assert err == np.mean([0.5, 0.2, 0.1, 0.3])
    # the costly schedule wins a window when its gain exceeds lam * 10 extra steps: 0.05, 0.01, 0 and 0.03 per step
    assert 0.01 <= lam < 0.03


def test_observation_only_choice_sees_the_other_draws_only():
    errors = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    np.testing.assert_array_equal(study.others_mean(errors, 1), errors[:, [0, 2]].mean(1))


@torch.no_grad()
def test_oracle_executes_the_schedule_its_cost_rule_names(tiny_policy):
    predictor = PolicyPredictor(tiny_policy)
    steps, blocks = tiny_policy.schedule.num_steps, len(predictor.kernels.block_fns)
    masks = {"every step": torch.zeros(steps, blocks, dtype=torch.bool), "every 3rd": interval_mask(steps, blocks, 3)}
    obs = {k: v[0].numpy() for k, v in random_observation(tiny_policy.config).items()}
    dense = predictor(obs, seed=7)

    exact = study.BudgetOracle(predictor, masks, lam=0.0)  # no price on steps: the dense-equal schedule
    np.testing.assert_allclose(exact(obs, seed=7), dense, rtol=1e-5, atol=1e-5)
    assert exact.chosen == {"every step": 1, "every 3rd": 0} and exact.mean_steps() == steps

    cheap = study.BudgetOracle(predictor, masks, lam=1e3)  # steps priced out: the cheaper schedule
    actions = cheap(obs, seed=7)
    assert cheap.chosen == {"every step": 0, "every 3rd": 1} and cheap.mean_steps() == 4
    assert not np.allclose(actions, dense)
