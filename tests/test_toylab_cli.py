"""The toylab command, as installed (the console script of the venv), each subcommand through
the real engine: a sweep on a real Dask cluster, sync to the real server process, the runs
table and the export of real recorded runs."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

TOYLAB = str(Path(sys.executable).parent / "toylab")


def toylab(*arguments, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([TOYLAB, *arguments], cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Three real grokking runs: two of a sweep (decoder lr 1e-3, 1e-2), one alone."""
    runs = tmp_path_factory.mktemp("cli") / "runs"
    env = {"TOYLAB_RUNS_DIR": str(runs)}
    swept = toylab("sweep", "experiments/grokking.py", "--name", "cli", "--grid", "decoder_lr=1e-3,1e-2", "--workers",
                   "1", "with", "paper", "train_steps=60", "log_every=10", env=env)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "2 points: 2 run now" in swept.stdout
    alone = subprocess.run([sys.executable, "experiments/grokking.py", "with", "train_steps=30", "seed=5"], cwd=REPO,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0, alone.stderr
    return runs


def test_help_lists_every_subcommand():
    result = toylab("--help")
    assert result.returncode == 0
    for command in ("sweep", "board", "sync", "runs", "export", "figures", "notebooks"):
        assert re.search(rf"^    {command}\s", result.stdout, re.MULTILINE), command


def test_figures_and_notebooks_are_the_make_targets_commands(recorded, tmp_path):
    missing = tmp_path / "nowhere"
    for command, says in (("figures", f"error: no runs directory at {missing}"),
                          ("notebooks", f"--source {missing}: no such runs directory")):
        result = toylab(command, "--source", str(missing))
        assert result.returncode == 2 and result.stderr.strip() == says, result.stderr
    drawn = toylab("figures", "--source", str(recorded), "--out", str(tmp_path / "out"), "--only", "grokking")
    assert "skipped phase_mse_paper_split.png" in drawn.stderr  # the recorded runs are no published sweep
    assert drawn.returncode == 1 and not list((tmp_path / "out").glob("*.png"))


def test_runs_table_shows_the_varying_config_and_the_results_and_filters(recorded):
    env = {"TOYLAB_RUNS_DIR": str(recorded)}
    result = toylab("runs", env=env)
    assert result.returncode == 0, result.stderr
    header, *rows, total = result.stdout.strip().splitlines()
    assert header.split()[:3] == ["run", "experiment", "status"]
    assert {"decoder_lr", "seed", "train_steps", "phase", "final_test_acc"} <= set(header.split())
    assert "final_rqi" not in header.split()[:8]  # results come after the config keys
    assert len(rows) == 3 and total == f"3 runs in {recorded}"
    only = toylab("runs", str(recorded), "--sweep", "cli", "decoder_lr=0.01", "--columns", "decoder_lr,seed")
    assert only.returncode == 0, only.stderr
    header, *rows, total = only.stdout.strip().splitlines()
    assert header.split()[:5] == ["run", "experiment", "status", "decoder_lr", "seed"]
    assert len(rows) == 1 and rows[0].split()[3] == "0.01" and total.startswith("1 runs")
    none = toylab("runs", "--status", "FAILED", env=env)
    assert none.returncode == 0 and "no runs in" in none.stdout
    bad = toylab("runs", "--columns", "nope", env=env)
    assert bad.returncode != 0 and bad.stderr.strip() == "toylab: --columns nope: not a config key of these runs"
    missing = toylab("runs", str(recorded / "nope"))
    assert missing.returncode != 0 and missing.stderr.strip() == f"toylab: no runs directory at {recorded / 'nope'}"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_writes_the_runs_table_and_the_metrics(recorded, tmp_path, suffix):
    import analysis

    env = {"TOYLAB_RUNS_DIR": str(recorded)}
    runs_file, metrics_file = tmp_path / f"runs{suffix}", tmp_path / f"metrics{suffix}"
    result = toylab("export", "--to", str(runs_file), "--sweep", "cli", env=env)
    assert result.returncode == 0, result.stderr
    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    exported = read(runs_file)
    table = analysis.runs_table(str(recorded))
    assert sorted(exported["run"]) == sorted(table[table["sweep"] == "cli"]["run"])
    assert sorted(exported["decoder_lr"]) == [1e-3, 1e-2] and set(exported["phase"]) <= {
        "comprehension", "grokking", "memorization", "confusion"}
    result = toylab("export", "--to", str(metrics_file), "--metrics", "test.acc", env=env)
    assert result.returncode == 0, result.stderr
    metrics = read(metrics_file)
    expected = analysis.metrics_table(str(recorded), metric="test.acc")
    assert len(metrics) == len(expected) > 0 and set(metrics["metric"]) == {"test.acc"}
    assert metrics.sort_values(["run", "step"])["value"].tolist() == expected.sort_values(["run", "step"])[
        "value"].tolist()
    bad = toylab("export", "--to", str(tmp_path / "runs.xlsx"), env=env)
    assert bad.returncode != 0 and "must end in .csv or .parquet" in bad.stderr
    assert not (tmp_path / "runs.xlsx").exists()


def test_export_function_keeps_list_config_values_as_json(tmp_path):
    import analysis

    plateau = [{"plateaued": True, "gain": 0.001}, {"plateaued": False, "gain": 0.2}]
    table = pd.DataFrame({"run": [1, 2], "experiment": ["e", "e"], "status": ["COMPLETED"] * 2, "sweep": [None] * 2,
                          "sizes": [[1, 2], [3]], "mixed": [1, "a"], "plateau": plateau,
                          "note": ["[draft", None]})
    module = sys.modules["analysis.export"]  # the module, which analysis.export (the function) shadows
    for path in (tmp_path / "t.parquet", tmp_path / "t.csv"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "runs_table", lambda *a, **k: table)
            analysis.export("anywhere", path)
        back = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        assert [json.loads(v) for v in back["sizes"]] == [[1, 2], [3]] and list(back["mixed"]) == ["1", "a"]
        # read back as a source, the lists and dicts are lists and dicts again (a run's plateau
        # record among them, which the analysis reads); text that only looks like JSON stays text
        source = analysis.runs_table(str(path))
        assert list(source["sizes"]) == [[1, 2], [3]] and list(source["plateau"]) == plateau
        assert list(analysis.runs.plateaued(source)) == [True, False] and source["note"][0] == "[draft"


def test_sync_uploads_to_the_real_server_and_board_refuses_an_unknown_command(recorded, local_mongo, tmp_path):
    import pymongo

    result = toylab("sync", str(recorded), env={"TOYLAB_MONGO_URL": local_mongo.url(), "TOYLAB_MONGO_DB": "cli"},
                    timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    db = pymongo.MongoClient(local_mongo.url(), serverSelectionTimeoutMS=5000)["cli"]
    assert db.runs.count_documents({"status": "COMPLETED"}) == 3
    board = toylab("board", "bogus", env={"TOYLAB_BOARD_STATE": str(tmp_path / "board")})
    assert board.returncode == 2 and len(board.stderr.strip().splitlines()) == 1 and "bogus" in board.stderr
    stop = toylab("board", "stop", env={"TOYLAB_BOARD_STATE": str(tmp_path / "board")})
    assert stop.returncode == 0 and "not running" in stop.stdout


def test_results_from_two_stores_accumulate_in_one_export_that_analysis_reads_back(recorded, tmp_path):
    """A measurement that takes several sessions: each exports its store's runs with --append
    into one committed runs table (docs/results), which the runs table, the analysis and the
    figures read back as they read a store."""
    import analysis

    other = tmp_path / "other-store"  # another session's store: its run ids start at 1 again
    swept = toylab("sweep", "experiments/grokking.py", "--name", "phase_mse_seeds", "--grid",
                   "decoder_lr=1e-05,0.0001", "--grid", "decoder_weight_decay=0", "--seeds", "2", "--workers", "1",
                   "with", "paper", "train_steps=60", "log_every=10", env={"TOYLAB_RUNS_DIR": str(other)})
    assert swept.returncode == 0, swept.stdout + swept.stderr
    results = tmp_path / "results" / "runs.csv"
    results.parent.mkdir()
    # the same store twice: each run kept once, and the second export says it added none
    for store, added, kept, total in ((recorded, 3, 0, 3), (recorded, 0, 3, 3), (other, 4, 0, 7)):
        result = toylab("export", str(store), "--to", str(results), "--append", "--status", "COMPLETED")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (f"{added} runs added to {results} ({kept} of the {added + kept} selected "
                                         f"were in it already; {total} runs in it)")
        assert len(pd.read_csv(results)) == total
    table = analysis.runs_table(str(results))
    assert sorted(table["run"]) == [1, 1, 2, 2, 3, 3, 4]  # two stores' ids, told apart by their start times
    stored = pd.concat([analysis.runs_table(str(recorded)), analysis.runs_table(str(other))])
    columns = ["decoder_lr", "seed", "phase", "t_train", "t_test"]
    key = lambda t: t[columns].astype(str).sort_values(columns).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(key(table), key(stored))
    seeds = analysis.sweep_runs(str(results), "phase_mse_seeds", decoder_weight_decay=0)
    assert len(seeds) == 4 and sorted(set(seeds["seed"])) == [0, 1]
    listed = toylab("runs", str(results), "--sweep", "phase_mse_seeds")
    assert listed.returncode == 0 and listed.stdout.strip().endswith(f"4 runs in {results}"), listed.stdout
    with pytest.raises(ValueError, match="exported runs table without curves"):
        analysis.metrics_table(str(results))
    out = tmp_path / "figures"
    drawn = toylab("figures", "--source", str(results), "--out", str(out))
    assert drawn.returncode == 0, drawn.stderr
    assert (out / "phase_mse_seeds.png").stat().st_size > 10_000
    sources = (out / "SOURCES.md").read_text().splitlines()
    row = next(line for line in sources if "[phase_mse_seeds.png]" in line)  # seed rule 0..9: seeds 0, 1
    assert f"`{results}`" in row and "seeds 0, 1 | 4 |" in row
    row = next(line for line in sources if "[phase_mse_seeds_reachable.png]" in line)  # reachable: 1 (2 not run)
    assert f"`{results}`" in row and "seed rule reachable: seeds 1 | 2 |" in row
    refused = toylab("figures", "--source", str(results), "--only", "two_stage")  # not drawn from a runs table
    assert refused.returncode == 2 and "is a runs table" in refused.stderr


def test_a_sweep_counts_the_points_done_in_a_committed_runs_table(recorded, tmp_path):
    """--done-in: a fresh store (the next session's machine) runs only the points the
    committed runs table does not have COMPLETED, whatever number type the table gives back;
    a missing table is refused in one line."""
    results = tmp_path / "results.csv"
    assert toylab("export", str(recorded), "--to", str(results), "--sweep", "cli").returncode == 0
    # as an export beside another experiment's runs writes it (their rows lack these keys): the
    # integer config values come back as 60.0, 10.0, ..., which are the same values
    table = pd.read_csv(results)
    integers = [c for c in table.columns if c != "run" and pd.api.types.is_integer_dtype(table[c])]
    table.astype({c: float for c in integers}).to_csv(results, index=False)
    assert "train_steps" in integers and ",60.0," in results.read_text()
    fresh = tmp_path / "fresh-store"
    command = ["sweep", "experiments/grokking.py", "--name", "cli", "--grid", "decoder_lr=1e-3,1e-2,1e-4", "--workers",
               "1", "--done-in", str(results), "with", "paper", "train_steps=60", "log_every=10"]
    swept = toylab(*command, env={"TOYLAB_RUNS_DIR": str(fresh)})
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert f"2 points have a COMPLETED run in {results}" in swept.stdout
    assert "3 points: 1 run now, 2 already COMPLETED (skipped)" in swept.stdout
    import analysis

    ran = analysis.runs_table(str(fresh))
    assert ran["decoder_lr"].tolist() == [1e-4] and ran["status"].tolist() == ["COMPLETED"]
    # a sweep of fewer points counts only its own among the table's (another seed's, here 1e-2)
    narrower = toylab(*[part.replace("1e-3,1e-2,1e-4", "1e-3") for part in command],
                      env={"TOYLAB_RUNS_DIR": str(fresh)})
    assert narrower.returncode == 0, narrower.stdout + narrower.stderr
    assert f"1 points have a COMPLETED run in {results}" in narrower.stdout
    assert "1 points: 0 run now, 1 already COMPLETED (skipped)" in narrower.stdout
    missing = toylab(*[str(tmp_path / "nope.csv") if part == str(results) else part for part in command],
                     env={"TOYLAB_RUNS_DIR": str(tmp_path / "untouched")})
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"--done-in {tmp_path / 'nope.csv'}: no runs table there (a .csv or .parquet file that toylab export wrote)")
    assert not (tmp_path / "untouched").exists()
