"""The levers for a phase diagram's undecided cells (issue 14), measured, printing two tables.

Most of a 1e5-step phase sweep is spent in memorization and confusion cells, which no rule
on the threshold steps can decide before the budget. Two levers:

1. models per batched step (``--models``): model-steps per second of
   ``toymodels.addition_train.train`` on one thread, G models of the paper config together
   (all run to the budget, as undecided cells do). A timing: run it on an idle machine.
2. a fixed point: would a rule "stop a run whose parameters no longer move" fire? For the
   undecided cells of the MSE diagram (seed 2: memorization at decoder lr 1e-3 and 1e-2,
   confusion at (1e-2, 10), (4e-3, 4), memorization at weight decay 10, ...), the largest
   change of any parameter over each window of 500 steps, at a few points of training. Not
   a timing: its numbers do not depend on the load.

    python benchmarks/phase_sweep_levers.py [--steps 2000] [--models 1 16 32 64] [--fixed-point-steps 40000]
"""
import argparse
import time

import torch

from experiments.grokking import build, ex
from toymodels.addition_engine import FlatNetwork
from toymodels.addition_train import train

# (decoder lr, decoder weight decay) of cells that run to the budget in the seed-2 diagram, and
# one grokking cell for contrast (it moves until it generalises)
UNDECIDED = [(1e-3, 0), (1e-2, 0), (1e-2, 10), (1e-5, 10), (3.98e-3, 4), (1e-4, 10), (2.51e-3, 2), (1e-5, 0)]


def configs(cells, steps, seed=2):
    base = {**ex.configurations[0](), **ex.named_configs["paper"]()}
    return [{**base, "decoder_lr": lr, "decoder_weight_decay": wd, "seed": seed, "train_steps": steps}
            for lr, wd in cells]


def built(cells, steps, seed=2):
    return [list(parts) for parts in zip(*(build(c) for c in configs(cells, steps, seed)))]


def throughput(models: int, steps: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        tasks, objectives, nets, settings = built([(1e-3, 0)] * models, steps)
        start = time.perf_counter()
        train(nets, tasks, objectives, settings, steps, log_every=steps, progress=False)
        best = min(best, time.perf_counter() - start)
    return models * steps / best


def fixed_point(steps: int, window: int = 500) -> tuple[list, list]:
    """Per window end: the largest |change| of any parameter of each model over the window."""
    rows, previous, count = [], {}, {"steps": 0}
    step = FlatNetwork.optimizer_step

    def recording_step(net):
        step(net)
        count["steps"] += 1
        if count["steps"] % window == 0:
            theta = net.theta.clone()
            if "theta" in previous:
                rows.append((count["steps"], (theta - previous["theta"]).abs().max(1).values.tolist()))
            previous["theta"] = theta

    tasks, objectives, nets, settings = built(UNDECIDED, steps)
    FlatNetwork.optimizer_step = recording_step
    try:
        outcomes = train(nets, tasks, objectives, settings, steps, log_every=steps, progress=False)
    finally:
        FlatNetwork.optimizer_step = step
    return rows, outcomes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps per throughput measurement")
    parser.add_argument("--models", type=int, nargs="+", default=[1, 16, 32, 64])
    parser.add_argument("--fixed-point-steps", type=int, default=40000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    print("1. models per batched step (paper config, one thread, best of 3)")
    print("| models | model-steps/s |\n|---:|---:|")
    for models in args.models:
        print(f"| {models} | {throughput(models, args.steps):.0f} |")

    rows, outcomes = fixed_point(args.fixed_point_steps)
    print(f"\n2. largest parameter change over 500 steps (seed 2; {args.fixed_point_steps} steps; phase so far)")
    header = [f"lr {lr:g} wd {wd:g}" for lr, wd in UNDECIDED]
    print("| step | " + " | ".join(header) + " |\n|---:|" + "---:|" * len(header))
    shown = [r for r in rows if r[0] in {1000, 5000, 10000, 20000, 30000} or r is rows[-1]]
    for step, changes in shown:
        print(f"| {step} | " + " | ".join(f"{c:.1e}" for c in changes) + " |")
    print("| t_train / t_test | " + " | ".join(f"{o.t_train} / {o.t_test}" for o in outcomes) + " |")


if __name__ == "__main__":
    main()
