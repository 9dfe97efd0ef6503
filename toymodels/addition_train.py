"""Full-batch training of the toy addition model (``toymodels.addition``), one model or
G of the same shape at once.

``train`` is the hot loop: one forward over all pairs per step (the loss uses the
train rows, the test metrics the others), per-step records kept as tensors and reduced
once per chunk, so threshold steps are exact without a host sync per metric per step.
The forward, the hand-written backward and the Adam(W) update are
``toymodels.addition_engine``'s.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from toymodels.addition import BatchedObjective
from toymodels.addition_engine import FlatNetwork
from toymodels.phases import TrainOutcome, first_crossing
from toymodels.representation import PARALLELOGRAM_TOLERANCE, rqi


def train(models, tasks, objectives, optimizers, train_steps: int, log_every: int,
          on_log: Optional[Callable[[int, int, dict], None]] = None, acc_threshold: float = 0.9,
          rqi_threshold: float = 0.95, rqi_tolerance: float = PARALLELOGRAM_TOLERANCE,
          chunk_steps: int = 500, stop_when: Optional[Callable[[int, TrainOutcome], bool]] = None,
          progress: Optional[bool] = None, resume: Optional[dict] = None,
          on_checkpoint: Optional[Callable[[dict], None]] = None) -> list[TrainOutcome]:
    """Full-batch training of one model or of G models of the same shape at once.

    Each of ``models``, ``tasks``, ``objectives``, ``optimizers`` is one item or a list of
    G (a single item is shared). Every model keeps its own data split, targets, learning
    rates and weight decays; the G models advance together through batched matrix
    products, so a sweep's grid points cost little more than one. Metrics at step s are
    measured on the parameters before update s, for train and test from the same forward.

    ``on_log(k, step, metrics)`` is called for model k in step order at every multiple of
    ``log_every``, at each first threshold crossing and at the last step.
    ``stop_when(k, outcome)`` is asked after every chunk of steps; once it returns True
    model k is frozen (its outcome and parameters stay as they were; without checkpoints
    it also leaves the batch, so the others run faster) and training ends when every
    model has stopped. Trained parameters are written back into ``models``.

    Checkpoints: ``on_checkpoint(state)`` is called after every chunk with the training
    state at that chunk boundary (parameters, Adam moments, threshold steps so far, the
    next step); ``resume=state`` continues from it. Training is deterministic given the
    state, so an interrupted and resumed run ends exactly where an uninterrupted one does.
    """
    models, tasks, objectives, optimizers = _as_batch(models, tasks, objectives, optimizers)
    G = len(models)
    net = FlatNetwork(models, optimizers)
    p = tasks[0].p
    pairs, labels = tasks[0].pairs, tasks[0].labels
    if any(t.p != p for t in tasks) or any(o.loss != objectives[0].loss for o in objectives):
        raise ValueError("models trained together must share p and the loss")
    dtype = net.dtype
    train_mask = torch.stack([t.train_mask for t in tasks])  # (G, n)
    n_train, n_test = train_mask.sum(1), (~train_mask).sum(1)
    train_weights = train_mask.to(dtype) / n_train[:, None].to(dtype)
    objective = BatchedObjective(objectives, labels, train_weights)
    # h = r(i) + r(j) for every pair as one product with the pair-symbol incidence matrix
    incidence = torch.zeros(len(pairs), p, dtype=dtype)
    incidence.index_put_((torch.arange(len(pairs)), pairs[:, 0]), torch.ones(len(pairs), dtype=dtype))
    incidence.index_put_((torch.arange(len(pairs)), pairs[:, 1]), torch.ones(len(pairs), dtype=dtype),
                         accumulate=True)
    incidence_T = incidence.T.contiguous()

    outcomes = [TrainOutcome(steps=0) for _ in range(G)]
    active = torch.ones(G, dtype=torch.bool)
    batch = list(range(G))  # the model in each row of the batch
    # Without checkpoints (whose state is the whole batch), stopped models leave the batch.
    compact = stop_when is not None and on_checkpoint is None and resume is None and G > 1
    start_step = 0
    if resume is not None:
        start_step = _restore(resume, net, outcomes, active, chunk_steps)
    bar = tqdm(total=train_steps, initial=start_step, desc="train", unit="step", disable=None if progress is None else not progress,
               mininterval=0.5, dynamic_ncols=True)
    records: dict[str, list] = {"row_loss": [], "correct": [], "rep": []}
    record_loss, record_correct, record_rep = records["row_loss"], records["correct"], records["rep"]

    def flush(first_step: int) -> None:
        """Reduce a chunk of per-step records to metrics, thresholds and log calls."""
        row_loss = torch.stack(records["row_loss"]).double()  # (K, G, n)
        correct = torch.stack(records["correct"])  # (K, G, n)
        reps = torch.stack(records["rep"]).double()  # (K, G, p, d)
        for values in records.values():
            values.clear()
        mask = train_mask[None]
        metrics = {
            "train.loss": ((row_loss * mask).sum(-1) / n_train).numpy(),
            # exact: integer counts divided in float64 (9/10 in float32 is < 0.9)
            "train.acc": ((correct & mask).sum(-1).double() / n_train).numpy(),
            "test.loss": ((row_loss * ~mask).sum(-1) / n_test).numpy(),
            "test.acc": ((correct & ~mask).sum(-1).double() / n_test).numpy(),
            "rqi": rqi(reps, rqi_tolerance).numpy(),
        }  # each (K, G)
        last_step = first_step + len(row_loss) - 1
        for b, k in enumerate(batch):  # batch row b holds model k
            if not active[k]:
                continue
            outcome = outcomes[k]
            crossings = set()
            for name, key, threshold, strict in (("t_train", "train.acc", acc_threshold, False),
                                                 ("t_test", "test.acc", acc_threshold, False),
                                                 ("t_rqi", "rqi", rqi_threshold, True)):
                if getattr(outcome, name) is None:
                    step = first_crossing(metrics[key][:, b], threshold, strict=strict, offset=first_step)
                    if step is not None:
                        setattr(outcome, name, step)
                        crossings.add(step)
            outcome.steps = last_step + 1
            outcome.final = {name: float(values[-1, b]) for name, values in metrics.items()}
            if outcome.steps < train_steps and stop_when is not None and stop_when(k, outcome):
                outcome.stopped_early = True
                active[k] = False
                net.freeze(b)
            if on_log is not None:
                for i, step in enumerate(range(first_step, last_step + 1)):
                    if step % log_every == 0 or step in crossings or step == last_step and (
                            outcome.steps == train_steps or outcome.stopped_early):
                        on_log(k, step, {name: float(values[i, b]) for name, values in metrics.items()})
        bar.update(len(row_loss))
        shown = outcomes[0].final
        bar.set_postfix({"train": f"{shown['train.acc']:.2f}", "test": f"{shown['test.acc']:.2f}",
                         "rqi": f"{shown['rqi']:.2f}"}, refresh=False)

    chunk_start = start_step
    for step in range(start_step, train_steps):
        r = net.representations()  # (G, p, d)
        hidden = torch.matmul(incidence, r)  # (G, n, d)
        output = net.decoder_forward(hidden)
        with torch.no_grad():
            row_loss, grad_output, predicted = objective(output)
        record_loss.append(row_loss)
        record_correct.append(predicted == labels)
        record_rep.append(r.clone())  # the table is updated in place
        grad_hidden = net.decoder_backward(grad_output)
        net.representations_backward(torch.matmul(incidence_T, grad_hidden))
        net.optimizer_step()
        if step - chunk_start + 1 == chunk_steps or step == train_steps - 1:
            flush(chunk_start)
            chunk_start = step + 1
            if on_checkpoint is not None:
                on_checkpoint(_checkpoint(net, outcomes, active, chunk_start, chunk_steps))
            if not active.any():
                break
            if compact and not all(active[k] for k in batch):
                # stopped models leave the batch: their forward and backward would be wasted
                keep = [b for b, k in enumerate(batch) if active[k]]
                net, batch, index = net.compacted(keep), [batch[b] for b in keep], torch.tensor(keep)
                train_mask, n_train, n_test = (x[index] for x in (train_mask, n_train, n_test))
                objective = objective.select(index)
    bar.close()
    net.write_back()
    return outcomes


def _checkpoint(net: FlatNetwork, outcomes: list, active: torch.Tensor, next_step: int,
                chunk_steps: int) -> dict:
    """The training state at a chunk boundary, as plain tensors and numbers (torch.save-able)."""
    return {"next_step": next_step, "chunk_steps": chunk_steps, "theta": net.theta.clone(),
            "active": active.clone(), "frozen": sorted(set(range(len(outcomes))) - {g["model"] for g in net.groups}),
            "adam": [{"exp_avg": g["exp_avg"].clone(), "exp_avg_sq": g["exp_avg_sq"].clone(),
                      "step": g["step"].clone(), "model": g["model"]} for g in net.groups],
            "outcomes": [vars(o).copy() for o in outcomes]}


def _restore(state: dict, net: FlatNetwork, outcomes: list, active: torch.Tensor, chunk_steps: int) -> int:
    """Load a ``_checkpoint`` state into a freshly built network; returns the next step."""
    if state["chunk_steps"] != chunk_steps or state["theta"].shape != net.theta.shape:
        raise ValueError("the checkpoint was written by a different model shape or chunk size")
    for k in state["frozen"]:
        net.freeze(k)
    net.theta.copy_(state["theta"])
    for group, saved in zip(net.groups, state["adam"]):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            group[key].copy_(saved[key])
    active.copy_(state["active"])
    for outcome, saved in zip(outcomes, state["outcomes"]):
        vars(outcome).update(saved)
    return state["next_step"]


def _as_batch(*arguments):
    """Lists of equal length G from arguments that are single items or lists."""
    lists = [list(a) if isinstance(a, (list, tuple)) else None for a in arguments]
    G = max((len(x) for x in lists if x is not None), default=1)
    return [x if x is not None else [a] * G for a, x in zip(arguments, lists)]
