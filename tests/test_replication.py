"""Replication of Liu et al. (2022) on the paper's defaults, at CI size.

The paper: with 45 of the 55 pairs, decoder lr 1e-4 and MSE, the toy model generalises
(test accuracy >= 0.9, RQI > 0.95) within 5000 steps; far below the critical training
fraction (~0.4 for p = 10) it cannot. Seeds are 0..9, the first ten, not chosen.
"""
import torch

from toymodels.addition import Objective, OptimizerSettings, ToyAdditionModel, make_addition_task
from toymodels.addition_train import train

SEEDS = range(10)


def train_seeds(train_fraction, steps=5000):
    tasks, objectives, models = [], [], []
    for seed in SEEDS:
        task = make_addition_task(10, train_fraction, seed)
        objective = Objective("mse", task.n_classes, 30, seed)
        torch.manual_seed(seed)
        tasks.append(task)
        objectives.append(objective)
        models.append(ToyAdditionModel(10, 1, objective.output_dim))
    # paper: embedding AdamW lr 1e-3, decoder AdamW lr 1e-4, no weight decay, full batch
    return train(models, tasks, objectives, OptimizerSettings("adamw", 1e-3, 1e-4, 0.0, 0.0), steps, 100,
                 progress=False)


def test_paper_defaults_generalise_in_most_runs():
    outcomes = train_seeds(45 / 55)
    generalised = [o.t_test is not None and o.t_rqi is not None for o in outcomes]
    assert sum(generalised) >= 6, [(o.t_train, o.t_test, o.t_rqi) for o in outcomes]
    for o in outcomes:
        assert o.t_train is not None  # the training pairs are always fitted
        if o.t_test is not None:  # representation forms no later than generalisation
            assert o.t_rqi is not None and o.t_rqi <= o.t_test


def test_far_below_the_critical_fraction_nothing_generalises():
    outcomes = train_seeds(0.2)
    assert all(o.t_test is None for o in outcomes), [o.t_test for o in outcomes]
    assert all(o.final["test.acc"] < 0.9 for o in outcomes)
