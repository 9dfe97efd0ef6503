"""`make figures` (python -m analysis.headline_figures) on small real runs of every experiment:
the PNGs are written and are images, SOURCES.md names exactly the runs each came from, a
missing experiment is skipped with what to run, and a source that is not there fails in one line."""
import re
import shutil

import pytest
from PIL import Image

import sweeps
from conftest import REPO, run_script
from experiments.grokking import SWEEPS

GROKKING = str(REPO / "experiments" / "grokking.py")
FLOW = str(REPO / "experiments" / "flow_vs_regression.py")
MSE_LRS = [SWEEPS["phase_mse_paper_split"]["grid"]["decoder_lr"][k] for k in (5, 8)]
FSM_TINY = {"n_transitions": 12, "train_sequences": 64, "val_sequences": 32, "eval_sequences": 0, "epochs": 2,
            "batch_size": 16, "d_model": 16, "probe_sequences": 16, "probe_epochs": 0}
ALL = ["critical_fraction.png", "flow_vs_regression_recon.png", "fsm_budget.png", "fsm_icl.png",
       "grokking_transformer_cpu.png",
       "list_ops_accuracy.png", "list_ops_attention.png", "phase_mse_paper_split.png", "two_stage.png"]


def sweep(experiment_file, name, spec, store) -> list:
    """Run a (CI-sized) sweep's points in this process, tagged ``name``; their run ids."""
    module = sweeps.load_experiment(experiment_file)
    points = sweeps.point_configs(module, sweeps.expand(module.ex.path, spec))
    rows = sweeps.run_block(experiment_file, name, points, store)
    assert [row["status"] for row in rows] == ["COMPLETED"] * len(points), rows
    return [int(row["run"]) for row in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Real runs of every experiment in one file store: the sweeps' runs tagged as the named
    sweeps would tag them, the other experiments' plain runs; experiment -> run ids."""
    root = tmp_path_factory.mktemp("store") / "runs"
    store, ids = sweeps.FileStore(str(root)), {}
    paper_split = SWEEPS["phase_mse_paper_split"]
    ids["phase_mse_paper_split"] = sweep(GROKKING, "phase_mse_paper_split", {
        **paper_split, "grid": {"decoder_lr": MSE_LRS, "decoder_weight_decay": [0]},
        "config": {**paper_split["config"], "train_steps": 300}}, store)
    ids["fraction_scan"] = sweep(GROKKING, "fraction_scan", {
        "grid": {"train_fraction": [0.3, 0.6]}, "named_configs": ["paper"], "config": {"train_steps": 200},
        "seeds": 1}, store)
    ids["flow_vs_regression"] = sweep(FLOW, "num_train", {
        "grid": {"dataset.num_train": [10, 20]}, "named_configs": ["quick"],
        "variants": ["regression", "flow_gaussian"], "config": {"training.num_epochs": 100}, "seeds": 1}, store)
    # a "converged" sweep is preferred to num_train when both are stored
    ids["flow_converged"] = sweep(FLOW, "converged", {
        "grid": {"dataset.num_train": [10]}, "named_configs": ["quick"],
        "variants": ["regression", "flow_gaussian"], "config": {"training.num_epochs": 120}, "seeds": 1}, store)
    # the flow run again at a longer budget (as converged_longer does): it replaces the 120-epoch one
    ids["flow_longer"] = sweep(FLOW, "converged_longer", {
        "variants": [["flow_gaussian", {"dataset.num_train": 10}]], "named_configs": ["quick"],
        "config": {"training.num_epochs": 240}, "seeds": 1}, store)
    with pytest.MonkeyPatch.context() as env:  # plain runs, recorded where the sweeps recorded theirs
        env.setenv("TOYLAB_RUNS_DIR", str(root))
        from experiments.fsm_icl import ex as fsm_icl
        from experiments.list_ops import ex as list_ops
        from experiments.two_stage import ex as two_stage

        ids["two_stage"] = [int(two_stage.run(named_configs=["tiny"], config_updates={"epochs_stage2": 5})._id)]
        ids["list_ops"] = [int(list_ops.run(named_configs=["ci"], config_updates={"epochs": 3})._id)]
        data_dir = str(tmp_path_factory.mktemp("fsm_data"))
        ids["fsm_icl"] = [int(fsm_icl.run(named_configs=["small_lstm_5s5a"],
                                      config_updates={**FSM_TINY, "data_dir": data_dir})._id)]
        from experiments.grokking_transformer import ex as transformer

        # the figure draws the runs of the named config cpu_grokking (here 60 steps of it); a
        # run without it (small) is not among them
        ids["grokking_transformer"] = [int(transformer.run(named_configs=["cpu_grokking"], config_updates={
            "train_steps": 60, "log_every": 10, "seed": seed})._id) for seed in (0, 1)]
        transformer.run(named_configs=["small"], config_updates={"train_steps": 20, "log_every": 10})
    return root, ids


def figures(source, out, *extra):
    return run_script(["-m", "analysis.headline_figures", "--source", str(source), "--out", str(out), *extra],
                      timeout=240)


def sources(out) -> dict:
    """SOURCES.md's rows: figure -> {count, ids (expanded from "1-3, 7"), source, the row}."""
    rows = {}
    for line in (out / "SOURCES.md").read_text().splitlines():
        match = re.match(r"\| \[([^\]]+)\]\(\1\) \|", line)
        if match:
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            ids = set()
            for part in cells[5].split(", "):
                low, _, high = part.partition("-")
                ids |= set(range(int(low), int(high or low) + 1))
            rows[match.group(1)] = {"count": int(cells[4]), "ids": ids, "source": cells[6], "row": line}
    return rows


def is_png(path) -> bool:
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG" and min(image.size) > 200


@pytest.fixture(scope="module")
def drawn(runs, tmp_path_factory):
    root, _ = runs
    out = tmp_path_factory.mktemp("figures") / "docs" / "figures"
    return figures(root, out), out


def test_every_figure_is_written_from_the_runs_it_names(runs, drawn):
    root, ids = runs
    result, out = drawn
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ALL
    assert all(is_png(out / name) for name in ALL)
    rows = sources(out)
    assert sorted(rows) == ALL
    expected = {"phase_mse_paper_split.png": ids["phase_mse_paper_split"],
                "critical_fraction.png": ids["fraction_scan"],
                "flow_vs_regression_recon.png": [ids["flow_converged"][0], *ids["flow_longer"]],  # regression, flow
                "two_stage.png": ids["two_stage"], "fsm_icl.png": ids["fsm_icl"], "fsm_budget.png": ids["fsm_icl"],
                "list_ops_accuracy.png": ids["list_ops"], "list_ops_attention.png": ids["list_ops"],
                "grokking_transformer_cpu.png": ids["grokking_transformer"]}
    for name, run_ids in expected.items():
        assert rows[name]["ids"] == set(run_ids) and rows[name]["count"] == len(run_ids), name
        assert rows[name]["source"] == f"`{root}`"
    assert "sweep `phase_mse_paper_split`" in rows["phase_mse_paper_split.png"]["row"]
    assert "sweep `converged`, `converged_longer`" in rows["flow_vs_regression_recon.png"]["row"]
    # the attention maps are not stored as data: the run's own artifact, byte for byte, and SOURCES.md says so
    [list_run] = ids["list_ops"]
    assert (out / "list_ops_attention.png").read_bytes() == (root / str(list_run) / "attention_First.png").read_bytes()
    assert "copied" in rows["list_ops_attention.png"]["row"]
    # the sweeps not run here are skipped, each in one line saying what to run
    assert ("skipped phase_cross_entropy_paper_split.png: no COMPLETED runs of sweep phase_cross_entropy_paper_split: "
            "python -m sweeps experiments/grokking.py --sweep phase_cross_entropy_paper_split") in result.stderr
    assert "phase_mse_seeds" not in result.stderr  # the *_seeds diagrams are drawn only when their runs are there


def test_a_missing_experiment_is_skipped_and_the_other_figures_keep_their_rows(runs, drawn, tmp_path):
    root, ids = runs
    _, full = drawn
    only_two_stage = tmp_path / "runs"
    only_two_stage.mkdir()
    shutil.copytree(root / str(ids["two_stage"][0]), only_two_stage / str(ids["two_stage"][0]))
    out = tmp_path / "figures"
    shutil.copytree(full, out)
    (out / "fsm_icl.png").unlink()  # a figure whose PNG is gone loses its row
    result = figures(only_two_stage, out)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "two_stage.png" in result.stdout
    assert "skipped fsm_icl.png: no COMPLETED fsm_icl training runs: python experiments/fsm_icl.py" in result.stderr
    assert "skipped list_ops_*.png: no COMPLETED list_ops runs" in result.stderr
    assert "skipped critical_fraction.png: no COMPLETED runs of sweep fraction_scan" in result.stderr
    rows, before = sources(out), sources(full)
    assert rows["two_stage.png"]["source"] == f"`{only_two_stage}`"
    assert rows["two_stage.png"]["ids"] == set(ids["two_stage"])
    assert "fsm_icl.png" not in rows
    assert {name: rows[name]["row"] for name in rows if name != "two_stage.png"} == {
        name: before[name]["row"] for name in ALL if name not in ("two_stage.png", "fsm_icl.png")}


def test_a_source_that_is_not_there_or_empty_fails_in_one_line(tmp_path):
    result = figures(tmp_path / "nowhere", tmp_path / "out")
    assert result.returncode != 0
    assert result.stderr.strip() == f"error: no runs directory at {tmp_path / 'nowhere'}"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    (tmp_path / "empty").mkdir()
    result = figures(tmp_path / "empty", tmp_path / "out")
    assert result.returncode != 0 and result.stderr.strip() == f"error: no runs in {tmp_path / 'empty'}"
    assert not list((tmp_path / "out").glob("*"))
