"""How fast the local MongoDB-compatible server takes runs, next to file storage.

    python benchmarks/board_throughput.py [--runs 4] [--sync-runs 20]

Rows (one table):
- live recording, file storage: grokking runs recorded to ./runs-style file storage;
- live recording, local server: the same runs recorded through TOYLAB_MONGO_URL to the
  local server (board/server.py, SQLite file), as with `make board` running;
- sync to the local server: finished file-storage runs uploaded by `python -m observers sync`.

Each grokking run is 2000 steps logging 5 metrics every 2 steps (1000 points per metric,
the experiment's default density) plus 2 PNG figures and model.pt. Needs `make board-deps`.
"""
import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.grokking import ex  # noqa: E402
from localboard.server import LocalMongo  # noqa: E402
from observers.sync import Uploader, run_dirs  # noqa: E402

CONFIG = {"train_steps": 2000, "log_every": 2}


def record(n: int, env: dict) -> float:
    """Seconds for n runs recorded by the observer the environment selects."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        began = time.perf_counter()
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the runs' own reports
            for seed in range(n):
                ex.run(config_updates={**CONFIG, "seed": seed}, options={"--loglevel": "ERROR", "--capture": "sys"})
        return time.perf_counter() - began
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4, help="grokking runs per live-recording row")
    parser.add_argument("--sync-runs", type=int, default=20, help="file-storage runs to sync")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = LocalMongo(tmp / "db.sqlite3").start()
        try:
            rows = []
            files = record(args.runs, {"TOYLAB_RUNS_DIR": str(tmp / "runs"), "TOYLAB_MONGO_URL": ""})
            rows.append(("live recording, file storage", args.runs, files))
            live = record(args.runs, {"TOYLAB_MONGO_URL": server.url(), "TOYLAB_MONGO_DB": "live",
                                      "TOYLAB_FALLBACK_DIR": str(tmp / "fallback")})
            rows.append(("live recording, local server", args.runs, live))

            copies = tmp / "to-sync"
            copies.mkdir()
            shutil.copytree(tmp / "runs" / "_sources", copies / "_sources")
            for i in range(1, args.sync_runs + 1):
                shutil.copytree(tmp / "runs" / "1", copies / str(i))
            import pymongo

            client = pymongo.MongoClient(server.url())
            began = time.perf_counter()
            report = Uploader(client["synced"]).sync(run_dirs([copies]))
            rows.append(("sync to the local server", len(report.uploaded), time.perf_counter() - began))
            client.close()
        finally:
            server.stop()

    points = 5 * CONFIG["train_steps"] // CONFIG["log_every"]
    print(f"grokking run: {CONFIG['train_steps']} steps, {points} metric points, 2 PNG figures + model.pt")
    print(f"{'':32} {'runs':>5} {'s/run':>7} {'runs/s':>7}")
    for name, n, seconds in rows:
        print(f"{name:32} {n:5d} {seconds / n:7.2f} {n / seconds:7.2f}")
    print(f"local-server overhead per run vs file storage: {(live - files) / args.runs:+.2f} s")


if __name__ == "__main__":
    main()
