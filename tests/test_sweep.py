"""Sweeps on a real local Dask cluster (worker processes), block training, the quick
phase diagram's landmarks, the analysis and the notebook.

Block training vs single runs: in float64 the threshold steps and phases are identical; in
float32 batched matrix products of different batch sizes round differently (about 1e-6),
which a few thousand steps of training amplify, so there only the phases must agree (see
the README, "Sweeps")."""
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, run_script
from experiments import sweep
from toymodels.phases import classify_phase

GROKKING = str(REPO / "experiments" / "grokking.py")
TINY = {"grid": {"decoder_lr": [1e-3, 1e-2]}, "seeds": [0], "config": {"train_steps": 100, "log_every": 10}}


@pytest.fixture(scope="module")
def client():
    """Two worker processes, shared by the cluster tests (starting a cluster takes seconds)."""
    c = sweep.make_client(workers=2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def completed_runs(root: Path, sweep_name: str) -> list[dict]:
    runs = []
    for run_dir in root.iterdir():
        if run_dir.name.isdigit() and (run_dir / "run.json").exists():
            data = json.loads((run_dir / "run.json").read_text())
            if data["meta"].get("sweep") == sweep_name and data["status"] == "COMPLETED":
                runs.append({"id": int(run_dir.name), **data})
    return runs


def test_sweep_runs_every_point_once_then_resumes_only_missing_points(client, tmp_path):
    import analysis

    root = tmp_path / "runs"
    rows = sweep.run_sweep(GROKKING, TINY, "tiny", client, block_size=2, store=sweep.FileStore(str(root)))
    assert [row["status"] for row in rows] == ["COMPLETED"] * 2
    runs = completed_runs(root, "tiny")
    assert len(runs) == 2 and len({r["meta"]["sweep_point"] for r in runs}) == 2
    table = analysis.sweep_runs(str(root), "tiny")
    assert sorted(zip(table["decoder_lr"], table["seed"])) == [(1e-3, 0), (1e-2, 0)]
    assert set(table["phase"]) <= {"comprehension", "grokking", "memorization", "confusion"}
    infos = [json.loads((root / str(r["id"]) / "info.json").read_text()) for r in runs]
    assert [info["trained_in_block_of"] for info in infos] == [2, 2]

    # "interrupted": one point lost its COMPLETED run, and the sweep grew by one value
    lost = runs[0]
    run_json = root / str(lost["id"]) / "run.json"
    run_json.write_text(json.dumps({**json.loads(run_json.read_text()), "status": "INTERRUPTED"}))
    grown = {**TINY, "grid": {"decoder_lr": [1e-3, 1e-2, 1e-4]}}
    rows = sweep.run_sweep(GROKKING, grown, "tiny", client, block_size=2, store=sweep.FileStore(str(root)))
    statuses = {row["point"].key: row["status"] for row in rows}
    assert sorted(statuses.values()) == ["COMPLETED", "COMPLETED", "SKIPPED"]
    assert statuses[lost["meta"]["sweep_point"]] == "COMPLETED"
    after = completed_runs(root, "tiny")
    assert len(after) == 3 and len({r["meta"]["sweep_point"] for r in after}) == 3


def test_killed_worker_point_is_retried_and_completed_exactly_once(client, tmp_path):
    root = tmp_path / "runs"
    spec = {"grid": {"decoder_lr": [1e-4, 1e-3, 1e-2]}, "config": {"train_steps": 2500}, "seeds": [0]}
    pids = client.run(os.getpid)  # worker address -> pid
    killed = {}

    def kill_a_worker_mid_run():
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            for run_dir in root.glob("[0-9]*"):
                try:
                    data = json.loads((run_dir / "run.json").read_text())
                except (OSError, ValueError):
                    continue
                if data["status"] != "RUNNING":
                    continue
                # every worker is running a point now (3 one-point blocks, 2 workers): kill one of them
                busy = [address for address, keys in client.processing().items() if keys]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed["pid"] = pids[busy[0]]
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker_mid_run)
    killer.start()
    rows = sweep.run_sweep(GROKKING, spec, "killed", client, block_size=1, store=sweep.FileStore(str(root)))
    killer.join()
    assert killed, "no run was seen RUNNING to kill its worker"
    assert [row["status"] for row in rows] == ["COMPLETED"] * 3
    runs = completed_runs(root, "killed")
    assert sorted(r["meta"]["sweep_point"] for r in runs) == sorted(row["point"].key for row in rows)
    statuses = [json.loads(d.joinpath("run.json").read_text())["status"] for d in root.glob("[0-9]*")]
    assert statuses.count("RUNNING") == 1  # the killed worker's run stays as it was; its point ran again
    assert killed["pid"] not in client.run(os.getpid).values()  # the nanny started a new worker process


def test_failed_point_is_reported_with_its_run_id(client, tmp_path):
    root = tmp_path / "runs"
    spec = {"grid": {"resume_from": [123456]}, "config": {"train_steps": 100}}  # no such run: main fails
    rows = sweep.run_sweep(GROKKING, spec, "failing", client, store=sweep.FileStore(str(root)))
    assert rows[0]["status"] == "FAILED" and rows[0]["run"] is not None
    assert json.loads((root / str(rows[0]["run"]) / "run.json").read_text())["status"] == "FAILED"
    import io

    out = io.StringIO()
    assert sweep.print_summary(rows, "failing", out) == 1
    assert f"FAILED: run {rows[0]['run']}" in out.getvalue()
