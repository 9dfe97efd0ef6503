"""Steps per second of the grokking toy model at its default config, on one CPU thread.

Compares, in the same process and on the same model, data and seed:
- straightforward: the usual per-step loop (autograd, two torch AdamW optimisers,
  separate train and test forwards, every metric pulled with .item()), in
  benchmarks/straightforward_grokking.py;
- toylab: toymodels.addition_train.train (one forward over all pairs, hand-written batched
  gradients, fused Adam(W), per-step records reduced per chunk).
Both detect the threshold steps exactly at every step; the table shows they agree.

    python benchmarks/grokking_speed.py [--steps 3000] [--repeats 10]
"""
import argparse
import time

import torch

from benchmarks.straightforward_grokking import train_straightforward
from toymodels.addition import Objective, OptimizerSettings, ToyAdditionModel, make_addition_task
from toymodels.addition_train import train


def fresh(seed=0):
    task = make_addition_task(10, 0.8, seed)
    objective = Objective("mse", task.n_classes, 30, seed)
    torch.manual_seed(seed)
    return task, objective, ToyAdditionModel(10, 1, objective.output_dim)


def time_straightforward(steps):
    task, objective, model = fresh()
    start = time.perf_counter()
    thresholds = train_straightforward(model, task, objective, steps, encoder_lr=1e-3, decoder_lr=1e-4)
    return time.perf_counter() - start, thresholds


def time_toylab(steps):
    task, objective, model = fresh()
    start = time.perf_counter()
    [outcome] = train(model, task, objective, OptimizerSettings(), steps, log_every=max(1, steps // 1000),
                      on_log=lambda k, step, metrics: None, progress=False)
    return time.perf_counter() - start, {"t_train": outcome.t_train, "t_test": outcome.t_test,
                                         "t_rqi": outcome.t_rqi}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=10, help="best of N, to damp noise from other processes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runners = {"straightforward per-step loop": time_straightforward, "toylab train()": time_toylab}
    # Repeats alternate between the two, so a slow spell of the machine hits both alike.
    timings = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, runner in runners.items():
            timings[name].append(runner(args.steps))
    rows = [(name, args.steps / min(timings[name])[0], min(timings[name])[1]) for name in runners]
    base = rows[0][1]
    print(f"grokking toy model, default config (p=10, 44 train pairs, MSE, d=1, decoder 200-200), "
          f"{args.steps} steps, 1 thread, best of {args.repeats}")
    print(f"| {'implementation':<30} | {'steps/s':>8} | {'speed-up':>8} | {'t_train':>7} | {'t_test':>6} | {'t_rqi':>5} |")
    print(f"|{'-' * 32}|{'-' * 10}:|{'-' * 10}:|{'-' * 9}:|{'-' * 8}:|{'-' * 7}:|")
    for name, rate, t in rows:
        print(f"| {name:<30} | {rate:>8.0f} | {rate / base:>7.2f}x | {str(t['t_train']):>7} | {str(t['t_test']):>6} "
              f"| {str(t['t_rqi']):>5} |")


if __name__ == "__main__":
    main()
