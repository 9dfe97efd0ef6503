"""The trainer's checkpoint state: stopping at a checkpoint and resuming from it gives
bit-identical parameters, threshold steps and logged metrics (one model and a batch of 2)."""
import pytest
import torch

from toymodels.addition import Objective, OptimizerSettings, ToyAdditionModel, make_addition_task
from toymodels.addition_train import train

STEPS = 1500


class Stop(Exception):
    pass


def setup(G):
    tasks = [make_addition_task(10, 0.8, seed) for seed in range(G)]
    objectives = [Objective("mse", t.n_classes, 30, seed) for seed, t in enumerate(tasks)]
    models = []
    for seed in range(G):
        torch.manual_seed(seed)
        models.append(ToyAdditionModel(10, 1, 30, seed=seed))
    optimizers = [OptimizerSettings(encoder_lr=1e-3 * (k + 1)) for k in range(G)]
    return models, tasks, objectives, optimizers


def run(G, resume=None, stop_at=None):
    models, tasks, objectives, optimizers = setup(G)
    logged, saved = [], {}

    def on_checkpoint(state):
        if state["next_step"] == stop_at:
            saved["state"] = state
            raise Stop()

    try:
        outcomes = train(models, tasks, objectives, optimizers, STEPS, 10, progress=False, resume=resume,
                         on_log=lambda k, step, m: logged.append((k, step, m)), on_checkpoint=on_checkpoint)
    except Stop:
        return saved["state"], logged
    return (outcomes, [torch.cat([p.flatten() for p in m.parameters()]) for m in models]), logged


@pytest.mark.parametrize("G", [1, 2])
def test_interrupted_and_resumed_training_equals_uninterrupted(G):
    (whole, whole_params), whole_log = run(G)
    state, first_log = run(G, stop_at=1000)
    (resumed, resumed_params), resumed_log = run(G, resume=state)
    assert [vars(o) for o in resumed] == [vars(o) for o in whole]
    assert all(torch.equal(a, b) for a, b in zip(resumed_params, whole_params))
    assert first_log + resumed_log == whole_log
    assert resumed_log[0][1] == 1000 and whole[0].t_train is not None
