"""Training, evaluation and linear probes for the finite-state-machine task (plain PyTorch).

``evaluate`` measures next-state loss and accuracy over a split, the in-context curve
(accuracy by how many times the current (state, action) pair already appeared, the last
bucket collecting ``max_repeats`` and more), accuracy on first occurrences and on
repeats, and for absorbing machines accuracy on the non-trivial positions (before
absorption; after it the next state is the current one).

``train`` runs epochs of shuffled minibatches with Adam and gradient-norm clipping (the
vanilla RNNs need it), evaluating the same number of training and validation sequences
after every epoch, with the parameters of that moment. The training walks are one fixed
set, or (``fresh_walks``) drawn anew for every epoch, so no machine is seen twice and a
model can only improve by learning the in-context algorithm, not the training set.

``fit_probes`` freezes a model, reads its hidden states at every action token of every
layer, and trains one linear map per layer to decode (a) the current state and (b) every
table entry seen so far in the sequence (S + 1 classes: the S states or "not seen yet").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from toymodels.fsm import Split, seen_entries


@dataclass
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    grad_clip: float  # max global gradient norm; 0: no clipping
    eval_sequences: int  # sequences of each split measured after every epoch (0: all)
    max_repeats: int  # last bucket of the in-context curve: this many earlier occurrences or more
    seed: int


def action_logits(model: nn.Module, tokens: torch.Tensor, n_states: int) -> torch.Tensor:
    """(B, T, S): the predictions at the action tokens (odd positions), over the dataset's
    S states (the head has one logit per state of the shared vocabulary; a dataset with
    fewer states uses the first S, so chance is 1/S from the start)."""
    return model(tokens)[:, 1::2, :n_states]


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, max_repeats: int, device: torch.device,
             limit: int = 0) -> dict:
    """Loss, accuracy, in-context curve and its companions over the first ``limit``
    sequences of ``split`` (0: all)."""
    was_training = model.training
    model.eval()
    n = len(split) if not limit else min(limit, len(split))
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct_by_count = torch.zeros(max_repeats + 1, dtype=torch.float64)
    total_by_count = torch.zeros(max_repeats + 1, dtype=torch.float64)
    nontrivial = torch.zeros(2, dtype=torch.float64)  # correct, total
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        tokens, targets = split.tokens[start:stop].to(device), split.targets[start:stop].to(device)
        logits = action_logits(model, tokens, split.n_states).float()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").cpu().double()
        correct = (logits.argmax(-1) == targets).cpu()
        bucket = split.counts[start:stop].clamp(max=max_repeats).flatten()
        correct_by_count += torch.bincount(bucket, weights=correct.flatten().double(), minlength=max_repeats + 1)
        total_by_count += torch.bincount(bucket, minlength=max_repeats + 1).double()
        keep = ~split.trivial[start:stop]
        nontrivial += torch.stack([correct[keep].sum().double(), keep.sum().double()])
    model.train(was_training)
    total = total_by_count.sum().item()
    metrics = {"loss": loss_sum.item() / total, "acc": correct_by_count.sum().item() / total}
    for count in range(max_repeats + 1):  # an empty bucket is NaN, not 0: nothing was measured there
        seen = total_by_count[count].item()
        metrics[f"icl_acc.{count}"] = correct_by_count[count].item() / seen if seen else float("nan")
    repeats = total_by_count[1:].sum().item()
    metrics["first_acc"] = metrics["icl_acc.0"]
    metrics["repeat_acc"] = correct_by_count[1:].sum().item() / repeats if repeats else float("nan")
    metrics["nontrivial_acc"] = (nontrivial[0] / nontrivial[1]).item() if nontrivial[1] else float("nan")
    return metrics


def train(model: nn.Module, train_split: Split, val_split: Split, settings: TrainSettings, device: torch.device,
          on_epoch: Callable[[int, dict], None], start_epoch: int = 0, progress: Optional[bool] = None,
          fresh_walks: Optional[Callable[[int], Split]] = None) -> dict:
    """Train for ``settings.epochs`` epochs; ``on_epoch(epoch, metrics)`` receives
    ``train.*`` and ``val.*`` metrics after each. Returns the last epoch's metrics.
    ``progress``: draw a bar over epochs (None: only when stderr is a terminal).
    ``fresh_walks(epoch)``: that epoch's training walks (``train.*`` is measured on them);
    None: ``train_split`` every epoch."""
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    metrics: dict = {}
    for epoch in tqdm(range(start_epoch, start_epoch + settings.epochs), desc="epochs", leave=False,
                      disable=None if progress is None else not progress):
        if fresh_walks is not None:
            train_split = fresh_walks(epoch)
        order = torch.randperm(len(train_split), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            tokens, targets = train_split.tokens[batch].to(device), train_split.targets[batch].to(device)
            loss = F.cross_entropy(action_logits(model, tokens, train_split.n_states).flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimizer.step()
        metrics = {}
        for name, split in (("train", train_split), ("val", val_split)):
            measured = evaluate(model, split, settings.batch_size, settings.max_repeats, device,
                                limit=settings.eval_sequences)
            metrics.update({f"{name}.{key}": value for key, value in measured.items()})
        on_epoch(epoch, metrics)
    return metrics


# ---------------------------------------------------------------------------- probes
@dataclass
class ProbeData:
    """Hidden states at the action tokens, per layer, and what the probes decode."""

    features: list  # per layer (M, d) float tensors, M = sequences x action tokens
    state: torch.Tensor  # (M,) current state s_t
    entries: torch.Tensor  # (M, S*A) table entry value, or S when not seen before step t
    seen: torch.Tensor  # (M, S*A) bool


@torch.no_grad()
def probe_data(model: nn.Module, split: Split, n_sequences: int, batch_size: int, device: torch.device) -> ProbeData:
    model.eval()
    n = min(n_sequences, len(split))
    layers: list = []
    for start in range(0, n, batch_size):
        states = model.hidden_states(split.tokens[start:min(n, start + batch_size)].to(device))
        for index, hidden in enumerate(states):
            if len(layers) <= index:
                layers.append([])
            layers[index].append(hidden[:, 1::2].flatten(0, 1).float().cpu())
    walks = split.walks
    T = walks.actions.shape[1]
    seen, table = seen_entries(walks)
    seen, table = seen[:n], table[:n]
    entries = np.where(seen, table[:, None, :], walks.n_states)  # S: "not seen yet"
    return ProbeData([torch.cat(parts) for parts in layers], torch.from_numpy(walks.states[:n, :T].reshape(-1)),
                     torch.from_numpy(entries.reshape(n * T, -1)), torch.from_numpy(seen.reshape(n * T, -1)))


def _probe_accuracies(probe: nn.Linear, features: torch.Tensor, data: ProbeData, n_states: int) -> dict:
    """``table_acc``: the entry's value among the S states, on entries seen so far (chance
    1/S); ``unseen_acc``: entries not seen yet classified as such."""
    with torch.no_grad():
        out = probe(features)
        state_acc = (out[:, :n_states].argmax(-1) == data.state).double().mean().item()
        entries = out[:, n_states:].view(len(features), data.entries.shape[1], n_states + 1)
        seen = data.seen
        value_right = entries[..., :n_states].argmax(-1) == data.entries
        unseen_right = entries.argmax(-1) == n_states
        return {"state_acc": state_acc,
                "table_acc": value_right[seen].double().mean().item() if seen.any() else float("nan"),
                "unseen_acc": unseen_right[~seen].double().mean().item() if (~seen).any() else float("nan")}


def fit_probes(model: nn.Module, train_split: Split, val_split: Split, n_sequences: int, epochs: int, lr: float,
               batch_size: int, device: torch.device, seed: int, positions_per_step: int = 1024,
               on_epoch: Optional[Callable[[int, dict], None]] = None) -> dict:
    """Linear probes on every layer's hidden states (layer 0: the input embedding),
    trained on ``n_sequences`` training walks, measured on as many validation walks.

    Per layer: ``state_acc`` (current state), ``table_acc`` (the value of entries seen so
    far, chance 1/S) and ``unseen_acc`` (recognising an entry as not seen yet).
    Returns {layer: metrics} after the last epoch; ``on_epoch(epoch, {"layerK.name": value})``."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    fit = probe_data(model, train_split, n_sequences, batch_size, device)
    held_out = probe_data(model, val_split, n_sequences, batch_size, device)
    S, n_entries = train_split.n_states, fit.entries.shape[1]
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probes = [nn.Linear(features.shape[1], S + n_entries * (S + 1)) for features in fit.features]
    optimizers = [torch.optim.Adam(probe.parameters(), lr=lr) for probe in probes]
    results: dict = {}
    for epoch in range(epochs):
        order = torch.randperm(len(fit.state), generator=generator)
        for start in range(0, len(order), positions_per_step):
            batch = order[start:start + positions_per_step]
            for probe, optimizer, features in zip(probes, optimizers, fit.features):
                out = probe(features[batch])
                loss = F.cross_entropy(out[:, :S], fit.state[batch]) + F.cross_entropy(
                    out[:, S:].reshape(-1, S + 1), fit.entries[batch].reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        results = {layer: _probe_accuracies(probe, features, held_out, S)
                   for layer, (probe, features) in enumerate(zip(probes, held_out.features))}
        if on_epoch is not None:
            on_epoch(epoch, {f"layer{layer}.{name}": value for layer, measured in results.items()
                             for name, value in measured.items()})
    return results
