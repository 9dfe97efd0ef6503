"""Minibatch training and evaluation of a classifier, shared by the experiments whose
model maps a tuple of input tensors to logits (two-stage learning, list operations).

``inputs`` is a tuple of tensors with the examples along dimension 0 (one tensor for an
MLP, tokens and padding mask for a transformer); the model is called as
``model(*batch_inputs)``. Plain PyTorch: no Sacred.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class EpochStats:
    loss: float  # mean cross-entropy over the examples
    acc: float  # fraction of examples whose argmax is the label


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator):
    """Index tensors covering 0..n-1 in a random order, ``batch_size`` at a time (last one shorter)."""
    order = torch.randperm(n, generator=generator)
    return order.split(batch_size)


def train_epoch(model, optimizer, inputs: tuple, labels: torch.Tensor, batch_size: int,
                generator: torch.Generator) -> EpochStats:
    """One pass over the examples in random minibatches; loss and accuracy are those of
    each batch before its update, averaged over the epoch (the usual running estimate)."""
    model.train()
    total_loss, correct = 0.0, 0
    for index in shuffled_batches(len(labels), batch_size, generator):
        logits = model(*(x[index] for x in inputs))
        loss = F.cross_entropy(logits, labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(index)
        correct += (logits.argmax(-1) == labels[index]).sum().item()
    return EpochStats(total_loss / len(labels), correct / len(labels))


@torch.no_grad()
def predict(model, inputs: tuple, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every example, in evaluation mode, ``batch_size`` examples at a time."""
    model.eval()
    n = len(inputs[0])
    return torch.cat([model(*(x[start:start + batch_size] for x in inputs)) for start in range(0, n, batch_size)])


def evaluate(model, inputs: tuple, labels: torch.Tensor, batch_size: int = 1024) -> EpochStats:
    """Loss and accuracy of the current parameters on every example."""
    logits = predict(model, inputs, batch_size)
    return EpochStats(F.cross_entropy(logits, labels).item(), (logits.argmax(-1) == labels).float().mean().item())
