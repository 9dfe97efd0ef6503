"""Training steps per second of the FSM models (experiments/fsm_icl.py) on this machine's
CPU, at the full plan's size and at the CPU-sized plan's, and the wall time of one run
extrapolated from them (training steps only; the per-epoch evaluation adds a forward pass
over eval_sequences of each split, about a third of an epoch's cost at the defaults).

Each named model config is built as the experiment builds it and trained for a few
steps on random walks of its dataset. The extrapolation is an estimate: the step cost is
fixed (fixed shapes), but a loaded machine is slower.

    python benchmarks/fsm_speed.py [--steps 5] [--threads 1] [--configs lstm_5s5a deep_rnn_5s5a]
"""
import argparse
import contextlib
import io
import time

import torch
from torch.nn import functional as F

from experiments.fsm_icl import PLAN_5S5A, ex, make_model
from toymodels import fsm, sequence_models
from toymodels.fsm_train import action_logits


def named_config(names: list) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # print_config prints the whole config
        return ex.run("print_config", named_configs=names, options={"--loglevel": "ERROR"}).config


def seconds_per_step(config: dict, steps: int) -> float:
    spec = fsm.WalkSpec(config["n_states"], config["n_actions"], config["absorbing"], config["n_transitions"],
                        config["batch_size"], 0)
    split = fsm.to_split(fsm.generate_walks(spec), config["vocab_states"])
    torch.manual_seed(0)
    model = make_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])

    def step():
        loss = F.cross_entropy(action_logits(model, split.tokens, split.n_states).flatten(0, 1),
                               split.targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: first-call allocations
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", nargs="+", default=PLAN_5S5A, choices=PLAN_5S5A)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} thread(s), {args.steps} timed steps per row\n")
    header = (f"{'config':<20} {'parameters':>10} {'full s/step':>12} {'full run (est.)':>16} "
              f"{'cpu s/step':>11} {'cpu run (est.)':>15}")
    print(header)
    print("-" * len(header))
    for name in args.configs:
        row = [f"{name:<20}"]
        for size in ([name], [name, "cpu"]):
            config = named_config(size)
            seconds = seconds_per_step(config, args.steps)
            total_steps = config["epochs"] * -(-config["train_sequences"] // config["batch_size"])
            if len(size) == 1:
                row.append(f"{sequence_models.n_parameters(make_model(config)):>10}")
            row.append(f"{seconds:>{12 if len(size) == 1 else 11}.3f}")
            row.append(f"{seconds * total_steps / 3600:>{15 if len(size) == 1 else 14}.2f} h")
        print(" ".join(row), flush=True)


if __name__ == "__main__":
    main()
