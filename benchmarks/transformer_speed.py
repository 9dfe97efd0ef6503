"""Steps per second of the transformer grokking configs on this machine's CPU (one thread
by default), and the wall time of each full config extrapolated from them.

Each named config of experiments/grokking_transformer.py (power, nanda, small) is built
exactly as the experiment builds it and trained for a few hundred steps with
toymodels.transformer.train, metrics on both whole splits at every step (the configs'
eval_every = 1) and, for comparison, with evaluation every 100 steps only (the cost of
training alone). The extrapolation is an estimate: the step cost does not change during
a run (fixed shapes), but a loaded machine is slower.

    python benchmarks/transformer_speed.py [--steps 200] [--threads 1] [--configs power nanda]
"""
import argparse
import contextlib
import io
import time

import torch

from experiments.grokking_transformer import ex
from toymodels.modular import make_modular_task
from toymodels.transformer import Transformer, TrainSettings, TransformerConfig, train

CONFIGS = ("small", "nanda", "power")


def named_config(name: str) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # print_config prints the whole config
        return ex.run("print_config", named_configs=[name], options={"--loglevel": "ERROR"}).config


def steps_per_second(config: dict, steps: int, eval_every: int) -> float:
    task = make_modular_task(config["p"], config["operation"], config["train_fraction"], config["seed"],
                             config["sequence"])
    torch.manual_seed(config["seed"])
    model = Transformer(TransformerConfig(task.vocab_size, task.n_outputs, task.context_length, config["n_layers"],
                                          config["d_model"], config["n_heads"], config["d_mlp"],
                                          config["layer_norm"], config["positions"], config["embedding_std"]))
    settings = TrainSettings(steps, config["lr"], config["weight_decay"], warmup_steps=config["warmup_steps"],
                             batch_size=config["batch_size"], eval_every=eval_every)
    train(model, task, TrainSettings(5, batch_size=config["batch_size"]), log_every=1, device="cpu",
          progress=False)  # warm-up: first-call allocations
    start = time.perf_counter()
    train(model, task, settings, log_every=eval_every, device="cpu", progress=False)
    return steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} thread(s), {args.steps} timed steps per row\n")
    header = (f"{'config':<18} {'train/test':>12} {'batch':>6} {'steps/s':>8} {'steps/s':>9} "
              f"{'budget':>7} {'full run (est.)':>16}")
    print(header)
    print(f"{'':<18} {'examples':>12} {'':>6} {'eval 1':>8} {'eval 100':>9} {'steps':>7} {'at eval 1':>16}")
    print("-" * len(header))
    for name in args.configs:
        config = named_config(name)
        task = make_modular_task(config["p"], config["operation"], config["train_fraction"], config["seed"],
                                 config["sequence"])
        n_train = int(task.train_mask.sum())
        every_step = steps_per_second(config, args.steps, 1)
        training_only = steps_per_second(config, args.steps, 100)
        hours = config["train_steps"] / every_step / 3600
        full = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"
        batch = config["batch_size"] or "full"
        print(f"{name:<18} {f'{n_train}/{len(task.answers) - n_train}':>12} {batch:>6} {every_step:>8.1f} "
              f"{training_only:>9.1f} {config['train_steps']:>7} {full:>16}")


if __name__ == "__main__":
    main()
