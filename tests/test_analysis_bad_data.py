"""Bad run directories never break loading: loaded where possible, else skipped with one line.

Injected: next to two good runs (one COMPLETED, one INTERRUPTED with checkpoint), run
directories that are half-written (run.json cut mid-file), hold invalid JSON in
metrics.json or info.json, miss info.json / metrics.json / cout.txt, are QUEUED, are
empty, or are not runs at all.
"""
import json
import shutil
import warnings

import pytest

import analysis
from experiments.grokking import ex


@pytest.fixture(scope="module")
def good_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for _ in range(2):
        ex.run(config_updates={"train_steps": 200, "log_every": 20}, options={"--file_storage": str(root)})
    return root


def corrupt(root):
    def clone(new_id):
        shutil.copytree(root / "1", root / str(new_id))
        return root / str(new_id)

    run = json.loads((root / "2" / "run.json").read_text())
    run["status"] = "INTERRUPTED"
    (root / "2" / "run.json").write_text(json.dumps(run))
    text = (clone(3) / "run.json").read_text()
    (root / "3" / "run.json").write_text(text[: len(text) // 2])  # half-written: skipped
    (clone(4) / "metrics.json").write_text('{"train.loss": {"values": [1.0, ')  # loaded, no metrics
    (clone(5) / "info.json").unlink()  # loaded
    (clone(6) / "info.json").write_text("{nope")  # loaded, empty info
    queued = clone(7)
    for name in ("info.json", "metrics.json", "cout.txt"):
        (queued / name).unlink()
    run["status"] = "QUEUED"
    run.pop("start_time", None)
    (queued / "run.json").write_text(json.dumps(run))  # loaded
    (root / "8").mkdir()  # empty: skipped
    (clone(9) / "config.json").unlink()  # no config: skipped
    (root / "_sources").mkdir(exist_ok=True)  # not a run: ignored silently
    (root / "fallback").mkdir(exist_ok=True)


def test_bad_run_directories_are_loaded_or_skipped_with_one_line(good_runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(good_runs, root)
    corrupt(root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = analysis.runs_table(str(root))
        points = analysis.metrics_table(str(root), metric="test.acc")
    assert table["run"].tolist() == [1, 2, 4, 5, 6, 7]
    assert table.set_index("run")["status"].to_dict() == {1: "COMPLETED", 2: "INTERRUPTED", 4: "COMPLETED",
                                                         5: "COMPLETED", 6: "COMPLETED", 7: "QUEUED"}
    assert table.set_index("run")["p"].notna().all()
    counts = points.groupby("run").size().to_dict()
    assert counts[1] == counts[2] == counts[5] == counts[6] > 0 and 4 not in counts and 7 not in counts
    messages = [str(w.message) for w in caught]
    assert all("\n" not in m for m in messages)
    for bad in ("3", "8", "9"):
        assert any(f"skipping run directory {root / bad}:" in m for m in messages), bad
    assert any(str(root / "4") in m and "metrics.json" in m for m in messages)
    assert any(str(root / "6") in m and "info.json" in m for m in messages)
    assert not any("_sources" in m or "fallback" in m for m in messages)


def test_loader_errors_are_one_line_without_credentials(tmp_path, local_mongo):
    """A runs directory that does not exist, a MongoDB that refuses the login, one that is not there."""
    with pytest.raises(FileNotFoundError, match=f"^no runs directory at {tmp_path / 'nope'}$"):
        analysis.runs_table(str(tmp_path / "nope"))
    wrong = local_mongo.url().replace(local_mongo.password, "wrong-password-123")
    with pytest.raises(PermissionError, match="^MongoDB refused access to database sacred") as refused:
        analysis.runs_table(wrong)
    assert "wrong-password-123" not in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(ConnectionError, match="^no MongoDB reachable at mongodb://127.0.0.1:1/") as absent:
        analysis.runs_table("mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=1000")
    assert "\n" not in str(absent.value)
    assert not (tmp_path / "nope").exists()


def test_loading_many_runs_keeps_no_artifact_open_and_reads_artifacts_on_demand(good_runs, tmp_path):
    import os

    root = tmp_path / "many"
    for k in range(1, 41):  # 40 runs of 5 artifacts: Incense alone would hold 200 files open
        shutil.copytree(good_runs / "1", root / str(k))
    open_files = len(os.listdir("/proc/self/fd"))
    runs = analysis.load_runs(root)
    assert len(runs) == 40 and len(os.listdir("/proc/self/fd")) <= open_files + 1
    figure = runs[-1].artifacts["training_curves.png"]
    assert figure.content == (root / "40" / "training_curves.png").read_bytes()
    assert figure.as_content_type("image/png").content[:4] == b"\x89PNG"
    assert len(os.listdir("/proc/self/fd")) <= open_files + 1  # read whole, closed again
