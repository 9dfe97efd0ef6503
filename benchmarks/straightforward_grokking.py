"""The straightforward per-step training loop, kept as the benchmark's baseline.

This is how the toy model is usually written (and how the original scripts do it):
per step, a training forward and backward, then separate train and test forwards for
accuracy, RQI from the embedding, each metric pulled to Python with ``.item()`` and the
thresholds checked in Python. It measures the same things as ``toymodels.addition_train.train``.
"""
from __future__ import annotations

import torch

from toymodels.addition import AdditionTask, Objective, ToyAdditionModel
from toymodels.representation import parallelograms


def train_straightforward(model: ToyAdditionModel, task: AdditionTask, objective: Objective, train_steps: int,
                          encoder_lr: float, decoder_lr: float, acc_threshold: float = 0.9,
                          rqi_threshold: float = 0.95) -> dict:
    quads = torch.from_numpy(parallelograms(task.p).copy())
    optim_rep = torch.optim.AdamW(model.representation_parameters(), lr=encoder_lr, weight_decay=0.0)
    optim_dec = torch.optim.AdamW(model.decoder.parameters(), lr=decoder_lr, weight_decay=0.0)
    train_pairs, test_pairs = task.train_pairs, task.test_pairs
    train_labels, test_labels = task.labels[task.train_mask], task.labels[~task.train_mask]
    thresholds = {"t_train": None, "t_test": None, "t_rqi": None}
    history = []
    for step in range(train_steps):
        # metrics on the parameters before this step's update
        with torch.no_grad():
            train_out, test_out = model(train_pairs), model(test_pairs)
            test_loss = objective.row_loss(test_out, test_labels).mean().item()
            train_acc = (objective.predict(train_out) == train_labels).double().mean().item()
            test_acc = (objective.predict(test_out) == test_labels).double().mean().item()
            E = model.symbol_representations()
            E = (E - E.mean(0)) / E.std(0)
            closing = E[quads[:, 0]] + E[quads[:, 1]] - E[quads[:, 2]] - E[quads[:, 3]]
            rqi = (closing.pow(2).mean(1) < 0.01).double().mean().item()
        loss = objective.row_loss(model(train_pairs), train_labels).mean()
        optim_rep.zero_grad()
        optim_dec.zero_grad()
        loss.backward()
        optim_rep.step()
        optim_dec.step()
        history.append((step, loss.item(), train_acc, test_loss, test_acc, rqi))
        for name, value, threshold in (("t_train", train_acc, acc_threshold), ("t_test", test_acc, acc_threshold)):
            if thresholds[name] is None and value >= threshold:
                thresholds[name] = step
        if thresholds["t_rqi"] is None and rqi > rqi_threshold:
            thresholds["t_rqi"] = step
    return thresholds
