"""The levers for a phase diagram's undecided cells (issue 14), measured, printing three tables.

Most of a 1e5-step phase sweep is spent in memorization and confusion cells, which no rule
on the threshold steps can decide before the budget. Three levers:

1. models per batched step (``--models``): model-steps per second of
   ``toymodels.addition_train.train`` on one thread, G models of the paper config together
   (all run to the budget, as undecided cells do). A timing: run it on an idle machine.
2. a fixed point: would a rule "stop a run whose parameters no longer move" fire? For the
   undecided cells of the MSE diagram (seed 2: memorization at decoder lr 1e-3 and 1e-2,
   confusion at (1e-2, 10), (4e-3, 4), memorization at weight decay 10, ...), the largest
   change of any parameter over each window of 500 steps, at a few points of training. Not
   a timing: its numbers do not depend on the load.
3. the arithmetic (``--arithmetic-models``): one training step of G models against its matrix
   products alone (the decoder's three layers forward and backward on the 55 pairs, as
   ``toymodels.addition_engine`` calls them), the products in float32 (what the sweeps use),
   bfloat16 (this CPU's AMX) and float64. The share of the step in the products bounds what
   faster products can give (Amdahl), before any check that the phases survive the
   precision. A timing: run it on an idle machine.

    python benchmarks/phase_sweep_levers.py [--steps 2000] [--models 1 16 32 64] [--fixed-point-steps 40000]
                                            [--arithmetic-models 16]
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


def products_seconds(models: int, dtype: torch.dtype, steps: int = 200, repeats: int = 5) -> float:
    """Seconds per step of one step's matrix products for ``models`` batched models (best of
    ``repeats``): the shapes of the paper config (55 pairs, hidden representation 1, width 200,
    30 outputs), the calls of FlatNetwork's forward and hand-written backward."""
    g, n, widths = models, 55, [1, 200, 200, 30]
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(g, o, i, generator=gen).to(dtype) * 0.05 for i, o in zip(widths, widths[1:])]
    biases = [torch.zeros(g, 1, o, dtype=dtype) for o in widths[1:]]
    x0 = torch.randn(g, n, 1, generator=gen).to(dtype)
    grad_out = torch.randn(g, n, widths[-1], generator=gen).to(dtype)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            inputs, x = [], x0
            for W, b in zip(weights, biases):
                inputs.append(x)
                x = torch.baddbmm(b, x, W.transpose(1, 2))
            grad = grad_out
            for W, x in zip(reversed(weights), reversed(inputs)):
                torch.bmm(grad.transpose(1, 2), x)  # the weight's gradient
                grad = torch.bmm(grad, W)  # the input's
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def table_fixed_point(steps: int) -> None:
    rows, outcomes = fixed_point(steps)
    print(f"\n2. largest parameter change over 500 steps (seed 2; {steps} steps; phase so far)")
    header = [f"lr {lr:g} wd {wd:g}" for lr, wd in UNDECIDED]
    print("| step | " + " | ".join(header) + " |\n|---:|" + "---:|" * len(header))
    shown = [r for r in rows if r[0] in {1000, 5000, 10000, 20000, 30000} or r is rows[-1]]
    for step, changes in shown:
        print(f"| {step} | " + " | ".join(f"{c:.1e}" for c in changes) + " |")
    print("| t_train / t_test | " + " | ".join(f"{o.t_train} / {o.t_test}" for o in outcomes) + " |")


def table_arithmetic(g: int, steps: int) -> None:
    step = g / throughput(g, steps)  # seconds per training step of g models
    print(f"\n3. one training step of {g} models against its matrix products alone (one thread, best of 5)")
    print(f"whole step, float32: {step * 1e3:.2f} ms")
    print("| products in | ms per step | share of the float32 step | whole step at most x faster |\n|---|---:|---:|---:|")
    fp32 = products_seconds(g, torch.float32)
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        seconds = fp32 if dtype == torch.float32 else products_seconds(g, dtype)
        bound = step / (step - fp32 + seconds)  # the rest of the step unchanged
        print(f"| {str(dtype).replace('torch.', '')} | {seconds * 1e3:.2f} | {seconds / step:.0%} | {bound:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="steps per throughput measurement")
    parser.add_argument("--models", type=int, nargs="+", default=[1, 16, 32, 64])
    parser.add_argument("--fixed-point-steps", type=int, default=40000)
    parser.add_argument("--arithmetic-models", type=int, default=16, help="models per step in table 3")
    parser.add_argument("--tables", type=int, nargs="+", choices=[1, 2, 3], default=[1, 2, 3], help="which tables")
    args = parser.parse_args()
    torch.set_num_threads(1)

    if 1 in args.tables:
        print("1. models per batched step (paper config, one thread, best of 3)")
        print("| models | model-steps/s |\n|---:|---:|")
        for models in args.models:
            print(f"| {models} | {throughput(models, args.steps):.0f} |")
    if 2 in args.tables:
        table_fixed_point(args.fixed_point_steps)
    if 3 in args.tables:
        table_arithmetic(args.arithmetic_models, args.steps)


if __name__ == "__main__":
    main()
