"""Two-stage learning on random labels: metrics, networks, the experiment end to end, the
replication check at CI size, the analysis and the notebook.

The claim at CI size (20-dim inputs, 1000 samples per stage, seeds 0-2, not chosen): a
network trained on the labels of a network that memorised random labels agrees with it on
held-out inputs far above chance, while the control (a fresh random label per input)
sits at chance, 1/10.
"""
import json
import os
from pathlib import Path

import pytest
import torch

import analysis.two_stage
import harness
from experiments.two_stage import ex
from conftest import REPO
from toymodels import two_stage

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Three tiny runs (seeds 0-2) in one runs directory; seed 0 with the ceiling and three
    sample sizes, the others with the main comparison and the control only (CI time)."""
    runs_dir = tmp_path_factory.mktemp("two-stage") / "runs"
    saved = os.environ.get("TOYLAB_RUNS_DIR")
    os.environ["TOYLAB_RUNS_DIR"] = str(runs_dir)
    try:
        runs = [ex.run(named_configs=["tiny"], config_updates={"seed": 0})]
        runs += [ex.run(named_configs=["tiny"], config_updates={"seed": seed, "ceiling": False,
                                                                "sample_sizes": [250, 1000]})
                 for seed in SEEDS[1:]]
    finally:
        if saved is None:
            del os.environ["TOYLAB_RUNS_DIR"]
        else:
            os.environ["TOYLAB_RUNS_DIR"] = saved
    return runs_dir, runs


# ---------------------------------------------------------------------------- units
def test_agreement_chance_kappa_and_correlation():
    a = torch.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]] * 5
    assert two_stage.agreement(a, a) == 1.0 and two_stage.cohen_kappa(a, a) == 1.0
    assert two_stage.output_correlation(a, a) == pytest.approx(1.0)
    b = torch.eye(4)[[0, 1, 2, 3, 1, 2, 3, 0]] * 5  # half the argmaxes agree
    assert two_stage.agreement(a, b) == 0.5
    assert two_stage.chance_agreement(a, b) == pytest.approx(0.25)  # both uniform over 4 classes
    assert two_stage.cohen_kappa(a, b) == pytest.approx((0.5 - 0.25) / 0.75)
    # chance is not 1/K when predictions are unbalanced: both always predicting class 0 agree by construction
    constant = torch.eye(4)[[0] * 8]
    assert two_stage.chance_agreement(constant, constant) == 1.0 and two_stage.cohen_kappa(constant, constant) == 1.0
    # independent random logits: agreement near 1/K, correlation near 0
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(20000, 10, generator=generator), torch.randn(20000, 10, generator=generator)
    assert two_stage.agreement(x, y) == pytest.approx(0.1, abs=0.01)
    assert abs(two_stage.output_correlation(x, y)) < 0.02
    assert abs(two_stage.cohen_kappa(x, y)) < 0.02


def test_networks_have_the_right_shapes():
    net = two_stage.build_network("mlp", 100, [256, 128, 64], 10)
    assert net(torch.randn(7, 100)).shape == (7, 10)
    widths = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [256, 128, 64, 10]
    resnet = two_stage.build_network("resnet18", 3 * 8 * 8, [], 10, channels=3, resnet_width=4)
    assert resnet(torch.randn(5, 3 * 8 * 8)).shape == (5, 10)
    convs = [m for m in resnet.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 17  # ResNet-18: stem + 8 blocks x 2 convolutions (+ the fc layer = 18)
    assert two_stage.image_size_for(3072, 3) == 32 and two_stage.image_size_for(100, 3) is None


def test_inputs_and_labels():
    generator = torch.Generator().manual_seed(0)
    iso = two_stage.gaussian_inputs(20000, two_stage.input_scales(5), generator)
    assert iso.var(0).sub(1).abs().max() < 0.05
    scales = two_stage.input_scales(50, "power_law", 1.0)
    assert (scales ** 2).mean().item() == pytest.approx(1.0) and torch.all(scales[:-1] >= scales[1:])
    labels = two_stage.random_labels(20000, 10, generator)
    assert labels.min() == 0 and labels.max() == 9
    assert torch.bincount(labels).div(20000).sub(0.1).abs().max() < 0.01


# ------------------------------------------------------------------ the experiment
def test_run_is_recorded_with_curves_results_and_figure(tiny_runs):
    runs_dir, runs = tiny_runs
    run_dir = runs_dir / str(runs[0]._id)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    epochs = runs[0].config["epochs_stage2"]
    for name in ("stage2.agreement", "stage2.correlation", "stage2.kappa", "stage2.acc", "control.agreement"):
        assert metrics[name]["steps"] == list(range(1, epochs + 1)), name
    assert metrics["stage1.acc"]["steps"][-1] == record["result"]["stage1_epochs"]
    assert metrics["sample_efficiency.agreement"]["steps"] == [250, 500, 1000]
    result = record["result"]
    assert result["stage1_train_acc"] >= runs[0].config["stage1_target_acc"]  # stage 1 fitted its random labels
    assert result["test_agreement"] == metrics["stage2.agreement"]["values"][-1] == result["agreement_n1000"]
    assert 0 <= result["ceiling_agreement"] <= 1
    png = (run_dir / "summary.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 20000


def test_agreement_far_above_the_structureless_control(tiny_runs):
    _, runs = tiny_runs
    for run in runs:
        r = run.result
        assert r["control_agreement"] == pytest.approx(0.1, abs=0.05), r  # chance: the claim is testable
        assert r["test_agreement"] > r["control_agreement"] + 0.15, r  # the finding: a learnable function
        assert r["test_kappa"] > 0.15 and abs(r["control_kappa"]) < 0.05, r
        assert r["test_correlation"] > 0.2, r
    # more stage-2 samples, better agreement (same Network_1)
    for run in runs:
        assert run.result["agreement_n1000"] > run.result["agreement_n250"], run.result


def test_analysis_aggregates_over_seeds(tiny_runs):
    runs_dir, runs = tiny_runs
    curves = analysis.two_stage.agreement_curves(str(runs_dir))
    assert list(curves["epoch"]) == list(range(1, 21)) and set(curves["n"]) == {3}
    last = curves.iloc[-1]
    values = [run.result["test_agreement"] for run in runs]
    assert last["mean"] == pytest.approx(sum(values) / 3)
    assert last["low"] < min(values) <= max(values) < last["high"]  # 3 seeds: t-interval wider than the range
    efficiency = analysis.two_stage.sample_efficiency(str(runs_dir), by=["input_dim"])
    assert efficiency.set_index("samples")["n"].to_dict() == {250: 3, 500: 1, 1000: 3}
    table = analysis.two_stage.outcomes(str(runs_dir), by=["hidden_sizes"])
    assert table.loc[0, "hidden_sizes"] == "256-128-64" and table.loc[0, "seeds"] == 3
    assert "±" in table.loc[0, "test_agreement"]


def test_notebook_executes_on_the_runs(tiny_runs, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    runs_dir, _ = tiny_runs
    monkeypatch.setenv("TOYLAB_RUNS_DIR", str(runs_dir))
    notebook = nbformat.read(REPO / "notebooks" / "two_stage.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "256-128-64" in outputs and "control_agreement" in outputs


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("updates, key", [({"stage2_samples": 0}, "stage2_samples"), ({"hidden_sizes": []}, "hidden_sizes"),
                                          ({"sample_sizes": [500, 99999]}, "sample_sizes"),
                                          ({"architecture": "vgg"}, "architecture"),
                                          ({"architecture": "resnet18"}, "input_dim")])
def test_bad_config_is_refused_before_a_run_is_recorded(updates, key):
    with pytest.raises(harness.ConfigError, match=f"^{key}="):
        ex.run(config_updates=updates)
    assert not list(Path(os.environ["TOYLAB_RUNS_DIR"]).glob("[0-9]*"))


def test_full_config_is_the_resnet_job():
    config = ex.run("print_config", named_configs=["full"]).config
    assert (config["architecture"], config["input_dim"], config["stage1_samples"], config["epochs_stage1"]) == (
        "resnet18", 3072, 50000, 200)
