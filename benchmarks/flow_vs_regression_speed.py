"""Epochs per second of experiments/flow_vs_regression.py's training loop on this
machine's CPU (one thread by default), per paradigm and architecture, and the wall time
of a default run (3000 epochs) extrapolated from them.

Each row builds the default config's dataset and model (num_train 50: one full batch
per epoch, width 256, 3 layers) and trains for a few hundred epochs with
toymodels.flow_regression.train: once with the default evaluation cadence (every 50
epochs, both sets; a flow evaluation integrates RK4 in 20 steps, 80 forwards over 1050
points) and once without evaluation (training alone). A loaded machine is slower.

    python benchmarks/flow_vs_regression_speed.py [--epochs 300] [--threads 1]
"""
import argparse
import time

import torch

from toymodels import flow_regression as fr

PARADIGMS = (("regression", "zeros"), ("flow", "zeros"), ("flow", "gaussian"))
DEFAULT_EPOCHS, DEFAULT_EVAL_INTERVAL = 3000, 50


def epochs_per_second(mode: str, initial_dist: str, architecture: str, epochs: int, eval_interval: int) -> float:
    dataset = fr.make_dataset("recon", 50, 1000, 1, 1, 3, "uniform", "grid", 7, 8, 2, seed=0)
    torch.manual_seed(0)
    model = fr.make_model(architecture, dataset.dim, dataset.condition_dim, 256, 3, "gelu")
    settings = fr.TrainSettings(mode, 64, epochs, 1e-3, 10, eval_interval, initial_dist, 20, "rk4")
    fr.train(model, dataset, fr.TrainSettings(mode, num_epochs=5, initial_dist=initial_dist), 0,
             progress=False)  # warm-up: first-call allocations
    start = time.perf_counter()
    fr.train(model, dataset, settings, 0, progress=False)
    return epochs / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} thread(s), {args.epochs} timed epochs per row, num_train 50 (one step per epoch)\n")
    header = f"{'paradigm':<16} {'network':>8} {'epochs/s':>9} {'epochs/s':>9} {'default run':>12}"
    print(header)
    print(f"{'':<16} {'':>8} {'eval 50':>9} {'no eval':>9} {'(3000, est.)':>12}")
    print("-" * len(header))
    for mode, initial_dist in PARADIGMS:
        for architecture in fr.ARCHITECTURES:
            with_eval = epochs_per_second(mode, initial_dist, architecture, args.epochs, DEFAULT_EVAL_INTERVAL)
            alone = epochs_per_second(mode, initial_dist, architecture, args.epochs, args.epochs + 1)
            name = mode if mode == "regression" else f"flow ({initial_dist})"
            print(f"{name:<16} {architecture:>8} {with_eval:>9.0f} {alone:>9.0f} "
                  f"{DEFAULT_EPOCHS / with_eval:>10.0f} s")


if __name__ == "__main__":
    main()
