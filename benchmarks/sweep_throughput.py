"""Sweep throughput: model-steps per second of a grokking sweep, per worker and in total.

The same sweep (decoder lr x decoder weight decay of the paper's toy model, every point
run to its budget: no early stop, so every way does the same arithmetic) is run
- one process per point: ``python experiments/grokking.py with ...``, ``--workers`` at a time;
- on a local Dask cluster of ``--workers`` processes, one point per task (block size 1);
- on the same cluster in blocks of 16 points trained together (the sweep's default).
Wall time includes everything a user waits for (process start, recording each run with
its metrics and figures). A last table times toymodels.addition_train.train alone, in one
process and thread, against the number of models trained together.

    python benchmarks/sweep_throughput.py [--steps 2000] [--workers 2] [--lrs 8] [--decays 2]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sweeps  # noqa: E402
from sweeps.worker import preload  # noqa: E402

GROKKING = str(REPO / "experiments" / "grokking.py")


def spec(lrs: int, decays: int, steps: int) -> dict:
    return {"grid": {"decoder_lr": [float(f"{10 ** (-5 + 3 * k / max(1, lrs - 1)):.4g}") for k in range(lrs)],
                     "decoder_weight_decay": [round(10 * k / max(1, decays - 1), 2) for k in range(decays)]},
            "named_configs": ["paper"], "config": {"train_steps": steps, "seed": 2}}


def one_process_per_point(points, workers: int, runs_dir: str) -> float:
    start = time.perf_counter()
    running: list = []
    queue = list(points)
    env = {**os.environ, "TOYLAB_RUNS_DIR": runs_dir}
    env.pop("TOYLAB_MONGO_URL", None)
    while queue or running:
        while queue and len(running) < workers:
            point = queue.pop(0)
            words = list(point.named_configs) + [f"{k}={v!r}" for k, v in point.updates.items()]
            running.append(subprocess.Popen([sys.executable, GROKKING, "with", *words], cwd=REPO, env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.05)
        running = [p for p in running if p.poll() is None]
    return time.perf_counter() - start


def on_dask(client, the_spec: dict, block_size: int, runs_dir: str) -> float:
    start = time.perf_counter()
    rows = sweeps.run_sweep(GROKKING, the_spec, f"bench-{block_size}", client, block_size=block_size,
                           store=sweeps.FileStore(runs_dir), progress=False)
    elapsed = time.perf_counter() - start
    assert all(row["status"] == "COMPLETED" for row in rows), rows
    return elapsed


def trainer_alone(steps: int, sizes=(1, 4, 16, 32)) -> list:
    """model-steps/s of train() for G models of the paper's config at once (one thread)."""
    from toymodels.addition import Objective, OptimizerSettings, ToyAdditionModel, make_addition_task
    from toymodels.addition_train import train

    torch.set_num_threads(1)
    rows = []
    for G in sizes:
        tasks = [make_addition_task(10, 45 / 55, seed) for seed in range(G)]
        objectives = [Objective("mse", t.n_classes, 30, seed) for seed, t in enumerate(tasks)]
        models = []
        for seed in range(G):
            torch.manual_seed(seed)
            models.append(ToyAdditionModel(10, 1, 30))
        settings = [OptimizerSettings(decoder_lr=10 ** (-5 + 3 * k / max(1, G - 1))) for k in range(G)]
        start = time.perf_counter()
        train(models, tasks, objectives, settings, steps, max(1, steps // 1000), progress=False)
        rows.append((G, G * steps / (time.perf_counter() - start)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="budget of every point (all run to it)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--lrs", type=int, default=8, help="decoder lrs, 10^linspace(-5, -2, N)")
    parser.add_argument("--decays", type=int, default=2, help="decoder weight decays, linspace(0, 10, N)")
    parser.add_argument("--skip-processes", action="store_true", help="skip the one-process-per-point baseline")
    args = parser.parse_args()
    the_spec = spec(args.lrs, args.decays, args.steps)
    points = sweeps.expand("grokking", the_spec)
    model_steps = len(points) * args.steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_processes:
            rows.append(("one process per point", one_process_per_point(points, args.workers, f"{tmp}/processes")))
        with sweeps.make_client(workers=args.workers) as client:
            client.run(preload, GROKKING)  # imports once per worker, as a long sweep amortises
            for block_size in (1, 16):
                label = "Dask, one point per task" if block_size == 1 else f"Dask, blocks of {block_size}"
                rows.append((label, on_dask(client, the_spec, block_size, f"{tmp}/dask{block_size}")))
            cluster = client.cluster
        cluster.close()
    print(f"sweep of {len(points)} points x {args.steps} steps ({model_steps} model-steps), paper config "
          f"(p=10, MSE, d=1), {args.workers} workers, {os.cpu_count()} cores")
    print(f"| {'how':<26} | {'wall s':>7} | {'model-steps/s total':>19} | {'per worker':>10} | {'speed-up':>8} |")
    print(f"|{'-' * 28}|{'-' * 8}:|{'-' * 20}:|{'-' * 11}:|{'-' * 9}:|")
    base = rows[0][1]
    for label, seconds in rows:
        rate = model_steps / seconds
        print(f"| {label:<26} | {seconds:>7.1f} | {rate:>19.0f} | {rate / args.workers:>10.0f} | "
              f"{base / seconds:>7.2f}x |")
    print()
    print(f"toymodels.addition_train.train alone, one process, one thread, {args.steps} steps")
    print(f"| {'models together':>15} | {'model-steps/s':>13} |")
    print(f"|{'-' * 16}:|{'-' * 14}:|")
    for G, rate in trainer_alone(args.steps):
        print(f"| {G:>15} | {rate:>13.0f} |")


if __name__ == "__main__":
    main()
