"""Regression vs flow matching (issue 6): units of toymodels/flow_regression.py, the
experiment end to end on the quick config, the behaviour it measures, bad input, the
analysis and the notebook.

The end-to-end runs are made once per module (both kinds x three paradigms x two seeds
on the quick config) and shared by the tests that read them.
"""
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

import analysis
from analysis import flow_vs_regression as fvr
from analysis.intervals import t_quantile_975
from conftest import REPO, run_script
from toymodels import flow_regression as fr

KINDS = ("recon", "proj")
PARADIGMS = ("regression", "flow_zeros", "flow_gaussian")
SEEDS = (0, 1)


# ----------------------------------------------------------------------------- units
def test_frequencies_are_distinct_primes():
    assert fr.primes_up_to(30) == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]
    primes = set(fr.primes_up_to(13))
    for seed in range(5):
        target = fr.make_target(6, 2, 4, "inverse_freq", 13, torch.Generator().manual_seed(seed))
        for row, weights in zip(target.frequencies.int().tolist(), target.weights):
            assert len(set(row)) == 4 and set(row) <= primes  # no frequency is a multiple of another
            # inverse_freq: w_i * freq_i is the same for every component, and weights sum to 1
            assert torch.allclose(weights * torch.tensor(row, dtype=torch.float32),
                                  (weights[0] * row[0]).expand(4), rtol=1e-5)
            assert math.isclose(weights.sum().item(), 1.0, rel_tol=1e-6)
    again = fr.make_target(6, 2, 4, "uniform", 13, torch.Generator().manual_seed(3))
    same = fr.make_target(6, 2, 4, "uniform", 13, torch.Generator().manual_seed(3))
    assert torch.equal(again.frequencies, same.frequencies) and torch.equal(again.phases, same.phases)


def test_projection_has_the_stated_rank_and_targets_lie_in_its_subspace():
    data = fr.make_dataset("proj", 40, 300, 1, 1, 3, "uniform", "random", 7, 8, 2, seed=4)
    P, U = data.target.projection, data.target.basis
    assert U.shape == (8, 2) and torch.linalg.matrix_rank(P).item() == 2
    assert torch.allclose(P @ P, P, atol=1e-5) and torch.allclose(P, P.T, atol=1e-6)
    for y in (data.train_y, data.eval_y):
        assert y.shape[1] == 8
        assert (y - y @ P).norm() < 1e-4 * y.norm()  # on the subspace
        assert torch.linalg.matrix_rank(y, rtol=1e-4).item() == 2  # and spanning it
    unprojected = data.target.unprojected(data.eval_c)
    assert torch.linalg.matrix_rank(unprojected, rtol=1e-4).item() > 2  # f itself is not in it
    assert fr.subspace_metrics(data.eval_y, U)["subspace_angle"] < 0.05  # degrees: float32 targets


def test_subspace_metrics_of_known_configurations():
    U = torch.linalg.qr(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)))[0]
    inside = torch.randn(50, 2) @ U.T
    orthogonal = torch.randn(50, 2) @ torch.linalg.qr(torch.eye(8) - U @ U.T)[0][:, :2].T
    m = fr.subspace_metrics(inside, U)
    assert m["subspace_angle"] < 0.05 and m["in_subspace_variance"] > 1 - 1e-6
    m = fr.subspace_metrics(orthogonal, U)
    assert abs(m["subspace_angle"] - 90) < 1e-3 and m["in_subspace_variance"] < 1e-6
    assert abs(m["subspace_alignment_error"] - 1) < 1e-6
    mixed = fr.off_subspace_fraction(inside + orthogonal, U)
    assert torch.all((mixed > 0) & (mixed < 1))


def test_a_diverged_flow_is_measured_and_drawn_not_a_crash():
    """Integrating a stiff learned field from x0 = 0 can overflow (seen in proj, flow from
    zeros): metrics become inf/NaN, figures leave those points out and say so."""
    data = fr.make_dataset("proj", 10, 60, 1, 1, 3, "uniform", "grid", 7, 8, 2, seed=3)
    prediction = data.eval_y.clone()
    prediction[:5], prediction[5:8], prediction[8] = float("inf"), 1e20, float("nan")
    assert all(math.isnan(v) for v in fr.subspace_metrics(prediction, data.target.basis).values())
    assert not math.isfinite(fr.errors(prediction, data.eval_y)["l2"])
    assert math.isinf(fr.errors(prediction[5:8], data.eval_y[5:8])["l2"]) is False  # float64: no overflow
    for draw in (fvr.predictions, fvr.error_distribution, fvr.subspace):
        fig = draw(data, prediction, "diverged")
        assert "6 of 60 predictions not finite" in " ".join(t.get_text() for t in fig.findobj(
            lambda a: hasattr(a, "get_text")))
        fvr.plt.close(fig)


def test_euler_is_first_order_and_rk4_fourth_order_on_a_known_ode():
    # dx/dt = x cos(t), x(0) = x0: x(1) = x0 exp(sin 1); t enters the field, as in flow matching
    x0 = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    exact = x0 * math.exp(math.sin(1.0))

    def field(x, t):
        return x * torch.cos(t)

    def error(method, steps):
        return (fr.integrate(field, x0, steps, method) - exact).abs().max().item()

    for method, order in (("euler", 1), ("rk4", 4)):
        ratios = [error(method, n) / error(method, 2 * n) for n in (4, 8, 16)]
        assert all(abs(math.log2(r) - order) < 0.25 for r in ratios), (method, ratios)
    assert error("rk4", 16) < 1e-6 < error("euler", 16)


@pytest.mark.parametrize("initial_dist", fr.INITIAL_DISTS)
def test_flow_matching_target_is_x1_minus_x0_on_the_straight_path(initial_dist):
    x1 = torch.randn(4000, 3, generator=torch.Generator().manual_seed(1))
    x_t, t, velocity = fr.flow_matching_batch(x1, initial_dist, torch.Generator().manual_seed(2))
    x0 = x_t - t * velocity  # the straight path x_t = x0 + t (x1 - x0)
    assert torch.allclose(x_t + (1 - t) * velocity, x1, atol=1e-5)
    assert t.shape == (4000, 1) and 0 <= t.min() and t.max() <= 1 and abs(t.mean().item() - 0.5) < 0.03
    if initial_dist == "zeros":
        assert x0.abs().max() < 1e-5 and torch.allclose(velocity, x1)
    else:  # x0 is independent standard normal noise
        assert abs(x0.mean().item()) < 0.05 and abs(x0.std().item() - 1) < 0.05
        assert abs(torch.corrcoef(torch.stack([x0[:, 0], x1[:, 0]]))[0, 1].item()) < 0.05


@pytest.mark.parametrize("architecture", fr.ARCHITECTURES)
def test_model_output_shapes_and_conditioning(architecture):
    for dim, condition_dim in ((1, 1), (8, 3)):
        model = fr.make_model(architecture, dim, condition_dim, 32, 3, "gelu")
        x, c, t = torch.randn(5, dim), torch.rand(5, condition_dim), torch.rand(5, 1)
        assert model(x, c, t).shape == (5, dim)
        assert not torch.allclose(model(x, c, t), model(x, torch.rand(5, condition_dim), t))
        assert not torch.allclose(model(x, c, t), model(x, c, torch.rand(5, 1)))
        assert fr.predict(model, c, "flow", num_steps=3, method="rk4").shape == (5, dim)


def test_training_loop_cadences_and_best_checkpoint():
    dataset = fr.make_dataset("recon", 12, 30, 1, 1, 2, "uniform", "random", 3, 8, 2, seed=0)
    model = fr.make_model("concat", 1, 1, 16, 2, "tanh")
    settings = fr.TrainSettings("flow", batch_size=5, num_epochs=9, log_interval=2, eval_interval=4,
                                initial_dist="gaussian", num_eval_steps=2)
    logged, saved = [], []
    outcome = fr.train(model, dataset, settings, 0, on_log=lambda epoch, m: logged.append((epoch, sorted(m))),
                       on_save=lambda o: saved.append(o.best_epoch), save_interval=3, progress=False)
    assert outcome.steps == 9 * 3  # batches of 5, 5 and 2 per epoch
    assert [e for e, names in logged if "train.loss" in names] == [1, 3, 5, 7, 8]
    assert [e for e, names in logged if "eval.l2" in names] == [3, 7, 8]
    assert saved == [-1, 3]  # after epochs 3 and 6 (not the last: the run saves at its end)
    assert outcome.best["eval.l2"] == min(m for m in (outcome.best["eval.l2"], outcome.final["eval.l2"]))
    best = fr.make_model("concat", 1, 1, 16, 2, "tanh")
    best.load_state_dict(outcome.best_state)
    again = fr.Evaluator(dataset, settings, 0).metrics(best)
    assert again["eval.l2"] == pytest.approx(outcome.best["eval.l2"], rel=1e-5)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Quick-config runs into one file-storage directory: {(kind, paradigm, seed): run dir}."""
    from experiments.flow_vs_regression import ex

    root = tmp_path_factory.mktemp("flow_vs_regression") / "runs"
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TOYLAB_RUNS_DIR", str(root))
        for kind in KINDS:
            for paradigm in PARADIGMS:
                for seed in SEEDS:
                    run = ex.run(named_configs=["quick", kind, paradigm], config_updates={"seed": seed},
                                 options={"--loglevel": "ERROR"})
                    assert run.status == "COMPLETED"
                    made[kind, paradigm, seed] = root / str(run._id)
    return made


def read(run_dir, name):
    return json.loads((Path(run_dir) / name).read_text())


def rebuild(run_dir):
    """The run's dataset, settings and final model, from its stored config and checkpoint."""
    config = read(run_dir, "config.json")
    d, n = config["dataset"], config["network"]
    dataset = fr.make_dataset(config["kind"], d["num_train"], d["num_eval"], d["target_dim"], d["condition_dim"],
                              d["num_components"], d["weight_strategy"], d["sampling_strategy"], d["max_frequency"],
                              d["output_dim"], d["subspace_dim"], config["seed"])
    model = fr.make_model(n["architecture"], dataset.dim, dataset.condition_dim, n["hidden_dim"], n["num_layers"],
                          n["activation"])
    model.load_state_dict(torch.load(Path(run_dir) / "model_final.pt", weights_only=True))
    t, e = config["training"], config["evaluation"]
    settings = fr.TrainSettings(config["mode"], t["batch_size"], t["num_epochs"], t["learning_rate"],
                                t["log_interval"], t["eval_interval"], t["initial_dist"], e["num_eval_steps"],
                                e["integration_method"])
    return config, dataset, model, settings


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("paradigm", ["regression", "flow_gaussian"])
def test_quick_run_records_metrics_result_and_artifacts(runs, kind, paradigm):
    run_dir = runs[kind, paradigm, 0]
    record, metrics, config = read(run_dir, "run.json"), read(run_dir, "metrics.json"), read(run_dir, "config.json")
    assert record["status"] == "COMPLETED" and record["experiment"]["name"] == "flow_vs_regression"
    assert (config["kind"], config["mode"]) == (kind, "regression" if paradigm == "regression" else "flow")
    names = {"train.loss", "train.l1", "train.l2", "eval.l1", "eval.l2"}
    if kind == "proj":
        names |= {"eval.subspace_angle", "eval.subspace_alignment_error", "eval.in_subspace_variance"}
    if paradigm != "regression":
        names |= {"integration.euler.eval.l2", "integration.rk4.eval.l2"}
    assert set(metrics) == names
    epochs = config["training"]["num_epochs"]
    assert metrics["eval.l2"]["steps"][-1] == epochs - 1  # the last epoch is always evaluated
    assert len(metrics["eval.l2"]["steps"]) == epochs // config["training"]["eval_interval"]
    assert len(metrics["train.loss"]["steps"]) == epochs // config["training"]["log_interval"]
    result = record["result"]
    assert result["final_eval_l2"] == metrics["eval.l2"]["values"][-1]
    assert result["best_eval_l2"] == min(metrics["eval.l2"]["values"])
    assert metrics["eval.l2"]["steps"][metrics["eval.l2"]["values"].index(result["best_eval_l2"])] == \
        result["best_epoch"]
    # the plateau rule (harness.plateau), recomputed from the stored eval curve: best before the
    # last 20% of the measurements against the best overall, below 1% relative or below 1% of
    # the error of predicting the mean of the eval targets is a plateau
    values = metrics["eval.l2"]["values"]
    split = round(len(values) * 0.8)
    gain = (min(values[:split]) - min(values)) / min(values[:split])
    dataset = fr.make_dataset(kind, **config["dataset"], seed=config["seed"])
    assert result["baseline_eval_l2"] == pytest.approx(float(((dataset.eval_y - dataset.eval_y.mean(0)) ** 2).mean()))
    assert result["plateau"]["gain"] == pytest.approx(gain)
    absolute = min(values[:split]) - min(values)
    assert result["plateau"]["plateaued"] == (gain < 0.01 or absolute < 0.01 * result["baseline_eval_l2"])
    assert read(run_dir, "info.json")["plateau"] == result["plateau"]
    figures = {"training_curves.png", "predictions.png", "error_distribution.png"}
    figures |= {"subspace.png"} if kind == "proj" else set()
    figures |= {"integration.png"} if paradigm != "regression" else set()
    for name in figures:
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG", name
    assert set(record["artifacts"]) == figures | {"model_best.pt", "model_final.pt"}
    best = torch.load(run_dir / "model_best.pt", weights_only=True)
    assert set(best) == set(torch.load(run_dir / "model_final.pt", weights_only=True))


def test_regression_fits_its_training_points(runs):
    for kind in KINDS:
        for seed in SEEDS:
            _, dataset, model, settings = rebuild(runs[kind, "regression", seed])
            variance = dataset.train_y.var(0).mean().item()
            l2 = fr.errors(fr.predict(model, dataset.train_c, "regression"), dataset.train_y)["l2"]
            assert l2 < 0.1 * variance, (kind, seed, l2, variance)
            assert read(runs[kind, "regression", seed], "run.json")["result"]["final_train_l2"] == pytest.approx(l2)
    recon = [read(runs["recon", "regression", s], "run.json")["result"]["final_train_l2"] for s in SEEDS]


def test_flow_from_zeros_one_euler_step_is_v_at_t0_and_learns_the_shortcut(runs):
    """With x0 = 0 one Euler step returns v(0, c, 0), the query regression answers. What
    the network learns, measured: on the path x_t = t x1 it recovers x1 (x_t / t gives it
    away for t > 0), but at t = 0 its output carries little of f(c), so the one-step
    prediction does NOT reproduce the training targets (see the README)."""
    for seed in SEEDS:
        _, dataset, model, _ = rebuild(runs["recon", "flow_zeros", seed])
        c, y = dataset.train_c, dataset.train_y
        zeros, t0 = torch.zeros_like(y), torch.zeros(len(y), 1)
        with torch.no_grad():
            one_step = fr.predict(model, c, "flow", num_steps=1, method="euler")
            assert torch.equal(one_step, model(zeros, c, t0))
            half = torch.full((len(y), 1), 0.5)
            on_path = fr.errors(model(0.5 * y, c, half), y)["l2"]
        variance = y.var(0).mean().item()
        assert on_path < 0.1 * variance, (seed, on_path)  # the velocity field is learned on the path
        assert fr.errors(one_step, y)["l2"] > 5 * on_path, seed  # but not at t = 0


def test_metrics_are_computed_on_the_evaluation_set(runs):
    for paradigm in PARADIGMS:
        config, dataset, model, settings = rebuild(runs["proj", paradigm, 0])
        result = read(runs["proj", paradigm, 0], "run.json")["result"]
        assert len(dataset.eval_c) == config["dataset"]["num_eval"] != config["dataset"]["num_train"]
        evaluator = fr.Evaluator(dataset, settings, config["seed"])
        on_eval = evaluator.predict(model, "eval")
        expected = {**fr.errors(on_eval, dataset.eval_y), **fr.subspace_metrics(on_eval, dataset.target.basis)}
        for name, value in expected.items():
            assert result[f"final_eval_{name}"] == pytest.approx(value, rel=1e-4, abs=1e-6), (paradigm, name)
        on_train = evaluator.predict(model, "train")
        assert result["final_train_l2"] == pytest.approx(fr.errors(on_train, dataset.train_y)["l2"], rel=1e-4)
        assert fr.subspace_metrics(on_train, dataset.target.basis)["subspace_angle"] != pytest.approx(
            result["final_eval_subspace_angle"], rel=1e-3)


# ----------------------------------------------------------------------------- config and bad input
def test_nested_overrides_named_configs_and_yaml_file(tmp_path):
    from experiments.flow_vs_regression import ex

    config = ex.run("print_config", config_updates={"mode": "flow", "training.learning_rate": 0.001,
                                                     "dataset.num_train": 100}).config
    assert (config["mode"], config["training"]["learning_rate"], config["dataset"]["num_train"]) == ("flow", 1e-3, 100)
    assert config["dataset"]["num_eval"] == 1000 and config["network"]["hidden_dim"] == 256  # siblings kept
    config = ex.run("print_config", named_configs=["proj", "flow_gaussian", "film"],
                    config_updates={"training.num_epochs": 600}).config
    assert (config["kind"], config["mode"], config["training"]["initial_dist"]) == ("proj", "flow", "gaussian")
    assert config["network"]["architecture"] == "film"
    assert config["training"]["eval_interval"] == 10  # derived from num_epochs, as documented
    path = tmp_path / "my_config.yaml"
    path.write_text("mode: flow\nkind: proj\ndataset:\n  num_train: 7\ntraining:\n  initial_dist: gaussian\n")
    result = run_script(["experiments/flow_vs_regression.py", "print_config", "with", str(path)])
    assert result.returncode == 0, result.stderr
    assert "num_train = 7" in result.stdout and "initial_dist = 'gaussian'" in result.stdout
    assert "kind = 'proj'" in result.stdout


def test_the_sources_example_config_is_a_named_config():
    from experiments.flow_vs_regression import ex

    config = ex.run("print_config", named_configs=["source_example"]).config
    assert config["network"]["activation"] == "relu"  # the source's example config, key by key
    assert (config["training"]["batch_size"], config["training"]["num_epochs"]) == (32, 5000)
    assert (config["evaluation"]["num_eval_steps"], config["evaluation"]["integration_method"]) == (1, "euler")
    defaults = ex.run("print_config").config  # and the defaults are the documented departures from it
    assert (defaults["network"]["activation"], defaults["training"]["batch_size"], defaults["training"]["num_epochs"],
            defaults["evaluation"]["num_eval_steps"], defaults["evaluation"]["integration_method"]) == (
        "gelu", 64, 3000, 20, "rk4")


BAD = [("mode=diffusion", "mode"), ("kind=denoise", "kind"), ("network.architecture=resnet", "network.architecture"),
       ("evaluation.integration_method=heun", "evaluation.integration_method"),
       ("training.initial_dist=uniform", "training.initial_dist"), ("dataset.num_train=0", "dataset.num_train"),
       ("dataset.subspace_dim=9", "dataset.subspace_dim"), ("evaluation.num_eval_steps=0", "evaluation.num_eval_steps"),
       ("training.learning_rate=-1", "training.learning_rate"), ("dataset.num_components=5", "dataset.num_components")]


@pytest.mark.parametrize("update, key", BAD)
def test_bad_input_is_refused_before_a_run_exists(update, key):
    import harness
    from experiments.flow_vs_regression import ex

    name, value = update.split("=")
    with pytest.raises(harness.ConfigError, match=rf"^{key}=.* is not allowed: "):
        ex.run(config_updates={name: json.loads(value) if value[0].isdigit() or value[0] == "-" else value})
    assert not Path(os.environ["TOYLAB_RUNS_DIR"]).exists()


def test_bad_input_on_the_command_line_is_one_line_and_records_nothing(tmp_path):
    runs_dir = tmp_path / "runs"
    result = run_script(["experiments/flow_vs_regression.py", "with", "quick", "mode=diffusion"],
                        env={"TOYLAB_RUNS_DIR": str(runs_dir)})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("harness.ConfigError: mode='diffusion' is not allowed: use one of regression, flow")
    assert not runs_dir.exists()


# ----------------------------------------------------------------------------- analysis and notebook
def test_analysis_compares_paradigms_with_intervals(runs):
    source = str(next(iter(runs.values())).parent)
    table = fvr.paradigm_table(source)
    assert len(table) == len(runs) and set(table["paradigm"]) == {"regression", "flow (zeros)", "flow (gaussian)"}
    summary = fvr.summarise(table, ["kind", "paradigm"], ["final_eval_l2"])
    assert len(summary) == 6 and (summary["final_eval_l2.n"] + summary["diverged"] == len(SEEDS)).all()
    for row in summary.to_dict("records"):
        group = table[(table["kind"] == row["kind"]) & (table["paradigm"] == row["paradigm"]) & ~table["diverged"]]
        values = group["final_eval_l2"]
        if len(values) < 2:
            continue
        assert row["final_eval_l2.mean"] == pytest.approx(values.mean())
        half = t_quantile_975(len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
        assert row["final_eval_l2.high"] - row["final_eval_l2.mean"] == pytest.approx(half)
    paired = fvr.paired_difference(table, "final_eval_l2", "flow (gaussian)", "regression")
    assert set(paired["kind"]) == set(KINDS) and (paired["difference.n"] + paired["diverged"] == len(SEEDS)).all()
    # a comparison is a finding only when both runs of every pair plateaued (as their info records)
    recorded = {(r["kind"], r["paradigm"], r["seed"]): r["plateau"]["plateaued"] for r in table.to_dict("records")}
    for row in paired.to_dict("records"):
        both = sum(recorded[row["kind"], "flow (gaussian)", seed] and recorded[row["kind"], "regression", seed]
                   for seed in SEEDS)
        assert row["plateaued"] == both
        assert row["verdict"].startswith("not converged") == (both < row["difference.n"])
    unfinished = fvr.paired_difference(table.assign(plateaued=False), "final_eval_l2", "flow (gaussian)", "regression")
    assert (unfinished["verdict"] == [f"not converged: 0 of {n} pairs plateaued" for n in unfinished["difference.n"]]).all()
    finished = fvr.paired_difference(table.assign(plateaued=True), "final_eval_l2", "flow (gaussian)", "regression")
    # two budgets of the same points are two comparisons, never pairs across budgets
    longer = table.assign(**{"training.num_epochs": table["training.num_epochs"] * 10, "run": table["run"] + 1000})
    both = fvr.paired_difference(pd.concat([table, longer]), "final_eval_l2", "flow (gaussian)", "regression")
    assert len(both) == 2 * len(paired) and (both["difference.n"] + both["diverged"] == len(SEEDS)).all()
    # a configuration run again longer counts at its longest budget only, and pairs with the
    # other paradigm's runs at theirs
    gaussian_longer = longer[longer["paradigm"] == "flow (gaussian)"]
    longest = fvr.at_longest_budget(pd.concat([table, gaussian_longer]))
    assert sorted(longest["run"]) == sorted(table.loc[table["paradigm"] != "flow (gaussian)", "run"].tolist()
                                            + gaussian_longer["run"].tolist())
    assert set(longest.loc[longest["paradigm"] == "flow (gaussian)", "budget"]) == {10 * table["training.num_epochs"].max()}
    across = fvr.paired_difference(longest, "final_eval_l2", "flow (gaussian)", "regression", by=fvr.CONFIGURATION[:-1])
    assert len(across) == len(paired) and (across["difference.n"] + across["diverged"] == len(SEEDS)).all()
    # ... but not while the longer runs have fewer seeds than the shorter (a sweep still running)
    partial = gaussian_longer[gaussian_longer["seed"] == SEEDS[0]]
    assert sorted(fvr.at_longest_budget(pd.concat([table, partial]))["run"]) == sorted(table["run"])
    assert set(finished["verdict"]) <= {"flow (gaussian) lower", "regression lower", "inconclusive"}
    # the same pairing compares architectures within each paradigm: FiLM runs of the same
    # seeds with twice the error give concat - film = -error, per paradigm
    film = table.assign(**{"network.architecture": "film", "run": table["run"] + 2000,
                           "final_eval_l2": 2 * table["final_eval_l2"]})
    architectures = fvr.paired_difference(pd.concat([table.assign(plateaued=True), film.assign(plateaued=True)]),
                                          "final_eval_l2", "concat", "film", compared="network.architecture")
    assert len(architectures) == 2 * 3 and set(architectures["paradigm"]) == set(table["paradigm"])
    for row in architectures.to_dict("records"):
        runs_of = table[(table["kind"] == row["kind"]) & (table["paradigm"] == row["paradigm"]) & ~table["diverged"]]
        assert row["difference.n"] == len(runs_of)
        if row["difference.n"]:
            assert row["difference.mean"] == pytest.approx(-runs_of["final_eval_l2"].mean())
        if row["difference.n"] >= 2 and row["difference.high"] < 0:
            assert row["verdict"] == "concat lower"
    # a diverged run (an overflowed integration) is counted, not averaged
    blown = table.assign(final_eval_l2=table["final_eval_l2"].where(table["paradigm"] != "flow (zeros)", 1e40))
    blown["diverged"] = fvr.diverged(blown["final_eval_l2"])
    zeros = fvr.summarise(blown, ["kind", "paradigm"], ["final_eval_l2"]).query("paradigm == 'flow (zeros)'")
    assert (zeros["diverged"] == len(SEEDS)).all() and (zeros["final_eval_l2.n"] == 0).all()
    integration = fvr.integration_table(source)
    assert set(integration["method"]) == {"euler", "rk4"} and set(integration["num_steps"]) == {1, 4, 16}
    assert set(integration["paradigm"]) == {"flow (zeros)", "flow (gaussian)"}
    assert fvr.mean_ci([1.0, 3.0]) == pytest.approx((2.0, 12.706, 2))
    assert analysis.flow_vs_regression is fvr


def test_notebook_runs_against_stored_runs(runs, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "notebooks" / "flow_vs_regression.ipynb", as_version=4)
    monkeypatch.setenv("TOYLAB_RUNS_DIR", str(next(iter(runs.values())).parent))  # the kernel inherits it
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
