"""The committed notebooks are rendered: each carries its outputs (figures included), no
error, and says where its runs came from. Executing them on quick sweeps is each
experiment's own test (test_sweep, test_two_stage, test_fsm_analysis, test_list_ops,
test_flow_vs_regression); those run in memory and never rewrite the committed copies."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from analysis.notebooks import NOTEBOOKS, notebook_paths

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_notebook_shows_its_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code for output in cell.get("outputs", [])]
    assert all(cell.get("execution_count") for cell in code), f"{path.name}: a code cell was never executed"
    assert not [o for o in outputs if o.get("output_type") == "error"], f"{path.name}: committed with an error"
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no figure in the committed copy"
    rendered = notebook.metadata.get("toylab", {}).get("rendered", {})
    assert rendered.get("source") and rendered.get("at"), f"{path.name}: not rendered by python -m analysis.notebooks"
    assert "mongodb://" not in nbformat.writes(notebook)  # a URL (and its password) never lands in a notebook
    for value in [rendered["source"], *rendered.get("settings", {}).values()]:
        # a file of the repository is named by its place in it, not by the machine it was rendered on
        parts = Path(value).parts
        inside = [Path(*parts[i:]) for i in range(1, len(parts)) if (REPO / Path(*parts[i:])).is_file()]
        assert not (Path(value).is_absolute() and inside), f"{path.name}: {value} is {inside[0]} of the repository"


def test_every_notebook_is_executed_by_a_test():
    tests = "".join(p.read_text() for p in (REPO / "tests").glob("test_*.py") if p.name != Path(__file__).name)
    for path in notebook_paths():
        assert f'"{path.name}"' in tests, f"no test executes {path.name}"


def test_render_names_a_missing_source_and_an_unknown_notebook(tmp_path):
    run = [sys.executable, "-m", "analysis.notebooks"]
    missing = subprocess.run(run + ["--source", str(tmp_path / "nothing")], cwd=REPO, capture_output=True, text=True)
    assert missing.returncode == 2 and "no such runs directory" in missing.stderr
    unknown = subprocess.run(run + ["--source", str(tmp_path), "nonesuch"], cwd=REPO, capture_output=True, text=True)
    assert unknown.returncode != 0 and "'nonesuch' is not one of" in unknown.stderr
    no_table = subprocess.run(run + ["--source", str(tmp_path / "nothing.csv"), "fsm_icl"], cwd=REPO,
                              capture_output=True, text=True)
    assert no_table.returncode == 2 and "nothing.csv: no such runs table" in no_table.stderr
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [p.name for p in notebook_paths()]


def test_a_render_records_its_settings_but_never_a_credential(monkeypatch):
    from analysis.notebooks import _settings

    monkeypatch.setenv("TOYLAB_PHASE_SWEEP", "phase_mse_seeds")
    monkeypatch.setenv("TOYLAB_SEED_RULE", "0..9")
    monkeypatch.setenv("TOYLAB_TEST_MONGO_URL", "mongodb://toylab:hunter2@127.0.0.1:27017")
    monkeypatch.setenv("TOYLAB_MONGO_PASSWORD", "hunter2")
    monkeypatch.setenv("TOYLAB_ELSEWHERE", "mongodb://toylab:hunter2@127.0.0.1:27018")
    monkeypatch.setenv("TOYLAB_PHASE_SOURCE", str(REPO / "docs" / "results" / "phase_mse_seeds.csv"))
    monkeypatch.setenv("TOYLAB_OUTSIDE", str(Path(sys.executable).resolve()))
    settings = _settings()
    assert settings["TOYLAB_PHASE_SWEEP"] == "phase_mse_seeds" and settings["TOYLAB_SEED_RULE"] == "0..9"
    assert "hunter2" not in repr(settings)
    # a committed table by its place in the repository (no one's machine in a committed copy),
    # a path outside it as it is
    assert settings["TOYLAB_PHASE_SOURCE"] == "docs/results/phase_mse_seeds.csv"
    assert settings["TOYLAB_OUTSIDE"] == str(Path(sys.executable).resolve())


def test_a_runs_table_renders_only_a_notebook_that_reads_one(tmp_path):
    """A notebook that does not read TOYLAB_RUNS_TABLE would draw ./runs and record the table as
    its source: refused in one line, before anything is executed or written."""
    table = tmp_path / "runs.csv"
    table.write_text("run,experiment,status\n1,grokking,COMPLETED\n")
    committed = (NOTEBOOKS / "grokking.ipynb").read_bytes()
    refused = subprocess.run([sys.executable, "-m", "analysis.notebooks", "--source", str(table), "fsm_icl", "grokking"],
                             cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip() == (f"--source {table}: a runs table, and grokking reads none (TOYLAB_RUNS_TABLE); "
                                      "give it a runs directory or a MongoDB URL")
    assert (NOTEBOOKS / "grokking.ipynb").read_bytes() == committed
