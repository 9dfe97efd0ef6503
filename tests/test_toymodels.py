"""Units for the grokking toy model: data, RQI, dof, phases, gradients, optimiser, batching."""
import numpy as np
import pytest
import torch

from toymodels.addition import (Objective, OptimizerSettings, ToyAdditionModel, make_addition_task, n_pairs,
                                n_train_pairs)
from toymodels.addition_train import train
from toymodels.phases import classify_phase, first_crossing
from toymodels.representation import degrees_of_freedom, parallelograms, rqi


# ------------------------------------------------------------------------ dataset
def test_addition_task_pairs_labels_and_split():
    task = make_addition_task(10, 45 / 55, seed=3)
    assert len(task.pairs) == n_pairs(10) == 55
    assert bool((task.pairs[:, 0] <= task.pairs[:, 1]).all())
    assert len({tuple(pair) for pair in task.pairs.tolist()}) == 55
    assert torch.equal(task.labels, task.pairs.sum(1))
    assert task.n_classes == 19
    assert int(task.train_mask.sum()) == 45 and len(task.test_pairs) == 10
    again = make_addition_task(10, 45 / 55, seed=3)
    assert torch.equal(task.train_mask, again.train_mask)
    assert not torch.equal(task.train_mask, make_addition_task(10, 45 / 55, seed=4).train_mask)


def test_train_fraction_rounds_to_pairs():
    assert n_train_pairs(10, 45 / 55) == 45
    assert n_train_pairs(10, 0.45) == 25  # 24.75
    assert n_train_pairs(10, 0.2) == 11


# ------------------------------------------------------------- RQI and effective theory
def test_parallelograms_of_p10():
    quads = parallelograms(10)
    assert len(quads) == 70
    i, n, j, m = quads.T
    assert ((i < j) & (j <= m) & (m < n)).all()
    assert (i + n == j + m).all()


def test_linear_embedding_has_rqi_one_and_shuffled_does_not():
    linear = torch.arange(10, dtype=torch.float64)[:, None] * 0.37 + 1.2
    assert float(rqi(linear)) == 1.0
    shuffled = linear[torch.randperm(10, generator=torch.Generator().manual_seed(0))]
    assert float(rqi(shuffled)) < 0.5
    # a 2-d linear embedding is linear too, and a batch of snapshots gives one RQI each
    plane = torch.arange(10, dtype=torch.float64)[:, None] * torch.tensor([[0.5, -1.0]])
    assert rqi(torch.stack([plane, shuffled.expand(10, 2)])).tolist()[0] == 1.0


def test_degrees_of_freedom():
    task = make_addition_task(10, 0.999, seed=0)  # 55 pairs: everything
    all_pairs = task.pairs.numpy()
    assert degrees_of_freedom(all_pairs, 10) == 2  # translation and scale only
    assert degrees_of_freedom(all_pairs[:5], 10) > 2
    assert degrees_of_freedom(np.zeros((0, 2), dtype=int), 10) == 10


# ---------------------------------------------------------------------- phases
def test_first_crossing_is_exact_at_the_threshold():
    accuracy = np.array([0, 1, 8, 9, 10]) / 10  # 9/10 in float64 is exactly 0.9's double
    assert first_crossing(accuracy, 0.9) == 3
    assert first_crossing(accuracy, 0.9, strict=True) == 4
    assert first_crossing(accuracy, 0.9, offset=100) == 103
    assert first_crossing(accuracy[:3], 0.9) is None


@pytest.mark.parametrize("t_train, t_test, phase", [
    (100, 300, "comprehension"), (100, 5000, "grokking"), (100, None, "memorization"), (None, None, "confusion"),
    (None, 50, "comprehension"),  # unreached counts as budget - 1: test before "train" -> small gap
])
def test_phase_rule(t_train, t_test, phase):
    assert classify_phase(t_train, t_test, budget=10_000, margin=1000) == phase


# ------------------------------------------------------- gradients and the optimiser
def _setup(representation="embedding", loss="mse", activation="tanh", seed=0, fraction=45 / 55):
    task = make_addition_task(10, fraction, seed)
    objective = Objective(loss, task.n_classes, 30, seed, dtype=torch.float64)
    torch.manual_seed(seed)
    model = ToyAdditionModel(10, 2, objective.output_dim, representation=representation, activation=activation,
                             decoder_width=16, encoder_width=12, seed=seed).double()
    return task, objective, model


@pytest.mark.parametrize("representation, loss, activation, optimizer", [
    ("embedding", "mse", "tanh", "adamw"), ("encoder", "cross_entropy", "relu", "adam"),
    ("embedding", "cross_entropy", "sigmoid", "adamw"),
])
def test_hand_written_training_matches_autograd_and_torch_optim(representation, loss, activation, optimizer):
    """Five steps of our trainer == five steps of autograd + torch.optim, to float64 precision."""
    task, objective, model = _setup(representation, loss, activation)
    reference = ToyAdditionModel(10, 2, objective.output_dim, representation=representation,
                                 activation=activation, decoder_width=16, encoder_width=12).double()
    reference.load_state_dict(model.state_dict())
    settings = OptimizerSettings(optimizer, 3e-2, 1e-2, 0.5, 0.1)
    train(model, task, objective, settings, train_steps=5, log_every=1, progress=False)

    torch_optimizer = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[optimizer]([
        {"params": reference.representation_parameters(), "lr": 3e-2, "weight_decay": 0.5},
        {"params": list(reference.decoder.parameters()), "lr": 1e-2, "weight_decay": 0.1}])
    weights = task.train_mask.double() / task.train_mask.sum()
    for _ in range(5):
        loss_value = objective.row_loss(reference(task.pairs), task.labels) @ weights
        torch_optimizer.zero_grad()
        loss_value.backward()
        torch_optimizer.step()
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-12), name


def test_training_several_models_together_equals_training_each_alone():
    """Same seeds, same threshold steps and final metrics, batched or alone."""
    settings = [OptimizerSettings(decoder_lr=lr) for lr in (1e-3, 3e-4, 1e-3)]
    setups = [_setup(seed=seed) for seed in (0, 1, 2)]
    alone = [train(m, t, o, s, 300, 10, progress=False)[0] for (t, o, m), s in zip(setups, settings)]
    setups = [_setup(seed=seed) for seed in (0, 1, 2)]
    tasks, objectives, models = map(list, zip(*setups))
    together = train(models, tasks, objectives, settings, 300, 10, progress=False)
    for a, b in zip(alone, together):
        assert (a.t_train, a.t_test, a.t_rqi) == (b.t_train, b.t_test, b.t_rqi)
        for key in a.final:
            assert a.final[key] == pytest.approx(b.final[key], rel=1e-9, abs=1e-12)


def test_log_calls_cover_cadence_crossings_and_last_step():
    task, objective, model = _setup(fraction=0.8)
    logged = []
    [outcome] = train(model, task, objective, OptimizerSettings(), 1200, 100,
                      on_log=lambda k, step, m: logged.append((step, m)), progress=False, chunk_steps=250)
    steps = [step for step, _ in logged]
    assert steps == sorted(steps) and steps[-1] == 1199
    assert set(range(0, 1200, 100)) <= set(steps)
    for name, key in (("t_train", "train.acc"), ("t_test", "test.acc")):
        crossing = getattr(outcome, name)
        if crossing is not None:
            assert crossing in steps
            assert [s for s, m in logged if m[key] >= 0.9][0] == crossing


def test_stop_when_ends_training_early_and_freezes_the_model():
    task, objective, model = _setup()
    [outcome] = train(model, task, objective, OptimizerSettings(), 5000, 50, chunk_steps=100, progress=False,
                      stop_when=lambda k, o: o.steps >= 300)
    assert outcome.stopped_early and outcome.steps == 300
