"""The FSM aggregate: intervals, grouping by configuration (curriculum stages apart), the
hypotheses table, and the notebook executed against runs recorded in a temporary directory."""
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness
from analysis import fsm
from conftest import REPO


def test_mean_interval_is_the_t_interval():
    stats = fsm.mean_interval([0.5, 0.6, 0.7, None, float("nan")])  # missing values are not zeros
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(0.6)
    assert stats["std"] == pytest.approx(0.1)
    assert stats["ci95"] == pytest.approx(4.303 * 0.1 / np.sqrt(3))
    assert fsm.mean_interval([0.4])["n"] == 1 and np.isnan(fsm.mean_interval([0.4])["ci95"])
    assert fsm.mean_interval([])["n"] == 0


def synthetic_runs(values: dict, plateaued: bool = True) -> pd.DataFrame:
    """A load()-shaped table: configuration -> list of repeat accuracies (one per seed), each
    run recorded as plateaued (or not) the way harness.plateau records it."""
    rows = []
    for configuration, accuracies in values.items():
        name, dataset = configuration.split(" ")[:2]
        after = configuration.split(" after ")[1] if " after " in configuration else None
        for seed, accuracy in enumerate(accuracies):
            rows.append({"run": len(rows) + 1, "configuration": configuration, "model": name, "d_model": 1,
                         "num_layers": 1, "dataset": dataset, "n_transitions": 32, "train_sequences": 100, "fresh_walks": True,
                         "lr": 1e-3, "epochs": 10, "init_from_dataset": after, "seed": seed, "chance": 0.2,
                         "final_val_acc": accuracy, "final_val_repeat_acc": accuracy,
                         "final_val_icl_acc": [0.2, accuracy, accuracy + 0.05],
                         "plateau": {"metric": "val.repeat_acc", "plateaued": plateaued}})
    return pd.DataFrame(rows)


def test_hypotheses_verdicts_follow_the_intervals():
    runs = synthetic_runs({"lstm 5s5a": [0.90, 0.92, 0.91], "deep_rnn 5s5a": [0.30, 0.31, 0.29],
                           "small_lstm 5s5a": [0.5, 0.7, 0.6], "vanilla_rnn 5s5a": [0.55, 0.65, 0.6],
                           "transformer 5s5a": [0.2, 0.21, 0.22]})
    table = fsm.hypotheses(runs).set_index("claim")
    verdicts = dict(zip(table["hypothesis"] + ": " + table.index, table["verdict"]))
    fairness = table.loc[table["hypothesis"] == "1 parameter fairness"].iloc[0]
    assert fairness["verdict"] == "supported" and fairness["difference"] == pytest.approx(0.61)
    assert "lstm 5s5a (10 epochs): 0.910 ± 0.025 (n=3)" == fairness["A"]
    architecture = table[table.index.str.startswith("gating")].iloc[0]
    assert architecture["verdict"] == "inconclusive"  # 0.6 vs 0.6 with wide intervals
    attention = table[table.index.str.startswith("attention")].iloc[0]
    assert attention["verdict"] == "contradicted"  # the transformer is worse here
    assert [v for k, v in verdicts.items() if k.startswith(("4", "5"))] == ["no runs"] * 3


def test_a_comparison_with_a_side_still_learning_reads_not_converged():
    runs = pd.concat([synthetic_runs({"lstm 5s5a": [0.90, 0.92, 0.91]}),
                      synthetic_runs({"deep_rnn 5s5a": [0.30, 0.31, 0.29]}, plateaued=False).assign(run=[7, 8, 9])],
                     ignore_index=True)
    runs.loc[runs.index[-1], "plateau"] = None  # a run recorded before the rule: not shown to have finished
    fairness = fsm.hypotheses(runs).iloc[0]
    assert fairness["difference"] == pytest.approx(0.61)  # the numbers stay, the verdict does not
    assert fairness["verdict"] == "not converged: deep_rnn 5s5a 0 of 3 runs plateaued at 10 epochs"
    assert fsm.aggregate(runs).set_index("configuration").loc["lstm 5s5a", "plateaued_runs"] == 3


def test_aggregate_and_curves_keep_curriculum_stages_apart():
    runs = synthetic_runs({"small_lstm 5s5a": [0.5, 0.6], "small_lstm 5s5a after easy": [0.7, 0.8]})
    longer = synthetic_runs({"small_lstm 5s5a": [0.55]}).assign(epochs=20, run=99)  # the control's budget
    aggregated = fsm.aggregate(runs, metrics=["final_val_acc"]).set_index("configuration")
    assert aggregated.loc["small_lstm 5s5a after easy", "final_val_acc_mean"] == pytest.approx(0.75)
    assert aggregated.loc["small_lstm 5s5a", "runs"] == [1, 2]
    curves = fsm.icl_curves(runs)
    after = curves[curves["configuration"] == "small_lstm 5s5a after easy"]
    assert after["mean"].tolist() == pytest.approx([0.2, 0.75, 0.80])
    curriculum = fsm.hypotheses(runs).iloc[-1]
    # two stages of 10 epochs against 10 from scratch is not "as many epochs": no verdict
    assert curriculum["hypothesis"] == "5 curriculum" and curriculum["verdict"] == "no runs"
    # with the 20-epoch control stored, the curriculum is compared with it; every other
    # hypothesis judges a configuration at its longest budget (small_lstm: 20 epochs now)
    both = pd.concat([runs, longer], ignore_index=True)
    labels = set(fsm.icl_curves(both)["label"])  # the two budgets' curves are not pooled
    assert labels == {"small_lstm 5s5a after easy",
                      "small_lstm 5s5a [T=32, N=100 fresh per epoch, lr 0.001, 10 epochs]",
                      "small_lstm 5s5a [T=32, N=100 fresh per epoch, lr 0.001, 20 epochs]"}
    # nor are runs on one fixed set of walks pooled with runs on fresh walks
    fixed_set = synthetic_runs({"small_lstm 5s5a": [0.3]}).assign(fresh_walks=False, run=98)
    labels = set(fsm.icl_curves(pd.concat([runs, fixed_set]))["label"])
    assert "small_lstm 5s5a [T=32, N=100, lr 0.001, 10 epochs]" in labels
    table = fsm.hypotheses(both)
    assert table.iloc[-1]["B"] == "small_lstm 5s5a (20 epochs): 0.550 (n=1)"
    assert table.iloc[-1]["difference"] == pytest.approx(0.2)
    assert table.iloc[2]["B"].startswith("small_lstm 5s5a (20 epochs)")


def test_a_plan_rerun_under_another_learning_rate_is_another_budget():
    """The same walks and epochs under Adam 3e-3 and 1e-3 are two plans: never pooled, and the
    hypotheses judge the one with more runs (here the 1e-3 re-run), not a mixture."""
    old = synthetic_runs({"lstm 5s5a": [0.99], "transformer 5s5a": [0.39]}).assign(lr=3e-3)
    new = synthetic_runs({"lstm 5s5a": [0.98, 0.99], "transformer 5s5a": [0.97, 0.99]})
    both = pd.concat([old, new.assign(run=new["run"] + 10)], ignore_index=True)
    assert fsm.plan_budget(both) == {"n_transitions": 32, "train_sequences": 100, "fresh_walks": True, "lr": 1e-3,
                                     "epochs": 10}
    assert sorted(fsm.plan_runs(both)["run"]) == [11, 12, 13, 14]
    aggregated = fsm.aggregate(both, metrics=["final_val_repeat_acc"])
    transformer = aggregated[aggregated["configuration"] == "transformer 5s5a"].set_index("lr")
    assert transformer.loc[3e-3, "runs"] == [2]
    assert transformer.loc[1e-3, "final_val_repeat_acc_mean"] == pytest.approx(0.98)
    claim = fsm.hypotheses(both).set_index("claim").loc["attention beats recurrence: transformer (110K) > LSTM (1.06M)"]
    assert claim["A"] == "transformer 5s5a (10 epochs): 0.980 ± 0.127 (n=2)"


def test_the_cpu_plan_is_read_as_cpu_defines_it_now_however_many_runs_an_older_rule_has(tmp_path):
    """Real one-epoch runs under `cpu`: two under an older learning rate, one under cpu's own,
    and a run on other walks. load_cpu_plan reads the one made under cpu as it is now; a
    store without such runs reads every run (the notebook test's)."""
    from experiments.fsm_icl import ex

    one_epoch = {"epochs": 1, "val_sequences": 32, "eval_sequences": 32, "data_dir": str(tmp_path / "data")}
    runs_dir = os.environ["TOYLAB_RUNS_DIR"]  # conftest: this test's own directory
    for seed in range(2):
        ex.run(named_configs=["small_vanilla_5s5a", "cpu"], config_updates={**one_epoch, "lr": 3e-3, "seed": seed})
    ex.run(named_configs=["small_vanilla_5s5a", "cpu"], config_updates=one_epoch)
    ex.run(named_configs=["small_vanilla_5s5a"], config_updates={**one_epoch, "n_transitions": 12,
                                                                 "train_sequences": 48})
    everything = fsm.load(runs_dir)
    assert len(everything) == 4 and fsm.plan_budget(everything)["lr"] == 3e-3  # the older rule has more runs
    plan = fsm.load_cpu_plan(runs_dir)
    assert plan["lr"].tolist() == [1e-3] and plan["train_sequences"].tolist() == [2000]
    assert fsm.plan_budget(plan) == {"n_transitions": 32, "train_sequences": 2000, "fresh_walks": True, "lr": 1e-3,
                                     "epochs": 1}


def test_the_notebook_answers_from_runs_in_a_temporary_directory(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    from experiments.fsm_icl import ex

    tiny = {"n_transitions": 12, "train_sequences": 48, "val_sequences": 32, "eval_sequences": 0, "epochs": 1,
            "batch_size": 16, "data_dir": str(tmp_path / "data"), "probe_epochs": 1, "probe_sequences": 8}
    for seed in range(2):
        for named in ("small_lstm_5s5a", "vanilla_rnn_5s5a"):
            ex.run(named_configs=[named], config_updates={**tiny, "seed": seed})
    runs = fsm.load(os.environ["TOYLAB_RUNS_DIR"])
    assert sorted(set(runs["configuration"])) == ["small_lstm 5s5a", "vanilla_rnn 5s5a"]

    notebook = nbformat.read(REPO / "notebooks" / "fsm_icl.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(REPO)}}).execute()
    text = "\n".join(str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
                     for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    assert "4 completed training runs" in text
    assert "small_lstm 5s5a (1 epochs): " in text and "(n=2)" in text  # the hypothesis row with its interval
    assert "parameter fairness" in text and "no runs" in text  # the rows without runs say so
    assert not any(output.get("output_type") == "error" for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs)


def test_a_short_budget_reads_not_converged_and_the_full_budget_gives_the_final_verdict(tmp_path):
    """Real runs (CI-sized): the hypotheses read after fewer epochs use each run's logged
    curve up to there and recompute the plateau there; 2 epochs are fewer than the rule's 5
    measurements, so every comparison is "not converged"; at the runs' own budget the table is
    the final one (same values, same plateau records as the runs' info)."""
    from experiments.fsm_icl import ex

    tiny = {"n_transitions": 12, "train_sequences": 48, "val_sequences": 32, "eval_sequences": 0, "epochs": 6,
            "batch_size": 16, "data_dir": str(tmp_path / "data")}
    runs_dir = os.environ["TOYLAB_RUNS_DIR"]  # conftest: this test's own directory
    for seed in range(2):
        for named in ("small_lstm_5s5a", "vanilla_rnn_5s5a"):
            ex.run(named_configs=[named], config_updates={**tiny, "seed": seed})
    gating = "gating beats 4x the parameters: small LSTM (68K) > vanilla RNN (270K)"
    final = fsm.hypotheses(runs_dir).set_index("claim").loc[gating]
    by_budget = fsm.hypotheses_by_budget(runs_dir, [2, 5, 6, 7])
    short = by_budget[(by_budget["epochs"] == 2) & (by_budget["claim"] == gating)].iloc[0]
    assert short["verdict"] == ("not converged: small_lstm 5s5a 0 of 2 runs plateaued at 2 epochs; "
                                "vanilla_rnn 5s5a 0 of 2 runs plateaued at 2 epochs")
    # at 5 of 6 epochs: each run's values at epoch index 4 and its plateau rule on the curve cut there
    table = fsm.load(runs_dir)
    points = fsm.learning_curves(runs_dir)
    five = []
    for run in table.to_dict("records"):
        mine = points[(points["run"] == run["run"]) & (points["epoch"] < 5)].sort_values("epoch")
        curve = mine[mine["metric"] == "val.repeat_acc"]
        five.append({**run, "final_val_repeat_acc": curve["value"].iloc[-1], "epochs": 5,
                     "final_val_acc": mine[mine["metric"] == "val.acc"]["value"].iloc[-1],
                     "plateau": harness.plateau({"val.repeat_acc": (curve["epoch"].tolist(), curve["value"].tolist())},
                                                "val.repeat_acc")})
    expected = fsm.hypotheses(pd.DataFrame(five)).set_index("claim").loc[gating]
    at_five = by_budget[(by_budget["epochs"] == 5) & (by_budget["claim"] == gating)].iloc[0]
    assert at_five["verdict"] == expected["verdict"] and at_five["difference"] == pytest.approx(expected["difference"])
    assert at_five["difference"] != pytest.approx(final["difference"])  # the values are epoch 5's, not the final ones
    full = by_budget[(by_budget["epochs"] == 6) & (by_budget["claim"] == gating)].iloc[0]
    assert full["verdict"] == final["verdict"] and full["difference"] == pytest.approx(final["difference"])
    assert full["A"] == final["A"] and full["B"] == final["B"]
    assert set(by_budget["epochs"]) == {2, 5, 6}  # no run has a 7th epoch: that budget has no rows
    curves = fsm.learning_curves(runs_dir)
    assert sorted(set(curves["configuration"])) == ["small_lstm 5s5a", "vanilla_rnn 5s5a"]
    assert len(curves[curves["metric"] == "val.repeat_acc"]) == 4 * 6
    figure = fsm.budget_figure(curves, steps_per_epoch=3)
    lines = [line for line in figure.axes[0].lines if "5s5a" in line.get_label()]  # not the chance line
    assert len(lines) == 2 and lines[0].get_xdata()[-1] == 18  # 6 epochs of 3 steps


def test_the_plan_accumulates_over_sessions_in_one_runs_table_with_its_curves(tmp_path, monkeypatch):
    """The CPU plan outlasts a session, and a session's store does not: each session exports
    its runs with their curves (`toylab export --append --curves`, the README's command) into
    one table. Run ids start at 1 in every store, so the table repeats them: the curriculum
    stage is labelled by its own record (run 1 of the other store is a 5s5a run: an id lookup
    would say "after 5s5a"), and the curves, the hypotheses at every budget and the budget
    figure come out as from the stores themselves."""
    import subprocess
    import sys

    from experiments.fsm_icl import ex

    tiny = {"n_transitions": 12, "train_sequences": 48, "val_sequences": 32, "eval_sequences": 0, "epochs": 6,
            "batch_size": 16, "data_dir": str(tmp_path / "data")}
    first, second = tmp_path / "session-1", tmp_path / "session-2"
    monkeypatch.setenv("TOYLAB_RUNS_DIR", str(first))
    ex.run(named_configs=["small_lstm_5s5a"], config_updates={**tiny, "dataset": "easy"})  # run 1
    ex.run(named_configs=["small_lstm_5s5a"], config_updates={**tiny, "init_from": 1})  # run 2: the stage after it
    ex.run(named_configs=["vanilla_rnn_5s5a"], config_updates=tiny)
    monkeypatch.setenv("TOYLAB_RUNS_DIR", str(second))
    for seed in range(2):
        ex.run(named_configs=["small_lstm_5s5a"], config_updates={**tiny, "seed": seed})  # runs 1, 2: 5s5a
    ex.run(named_configs=["vanilla_rnn_5s5a"], config_updates={**tiny, "seed": 1})

    table = tmp_path / "fsm_plan_cpu.csv"
    toylab = str(Path(sys.executable).parent / "toylab")
    for store, before in ((first, 0), (second, 3)):
        exported = subprocess.run([toylab, "export", str(store), "--to", str(table), "--append", "--experiment",
                                   "fsm_icl", "--status", "COMPLETED", "--curves", "val.acc,val.repeat_acc"],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
        assert exported.returncode == 0 and exported.stdout.strip() == (
            f"3 runs added to {table} (0 of the 3 selected were in it already; {before + 3} runs in it)"), exported.stderr

    runs = fsm.load(str(table))
    assert sorted(runs["run"]) == [1, 1, 2, 2, 3, 3]
    assert sorted(runs["configuration"]) == ["small_lstm 5s5a", "small_lstm 5s5a", "small_lstm 5s5a after easy",
                                             "small_lstm easy", "vanilla_rnn 5s5a", "vanilla_rnn 5s5a"]
    stores = pd.concat([fsm.load(str(first)), fsm.load(str(second))], ignore_index=True)
    same = ["run", "start_time", "configuration", "metric", "epoch", "value"]
    from_table = fsm.learning_curves(str(table))[same].sort_values(same[:5]).reset_index(drop=True)
    from_stores = pd.concat([fsm.learning_curves(str(first)), fsm.learning_curves(str(second))])[same]
    pd.testing.assert_frame_equal(from_table, from_stores.sort_values(same[:5]).reset_index(drop=True),
                                  check_dtype=False)
    assert len(from_table[from_table["metric"] == "val.repeat_acc"]) == 5 * 6  # the curriculum stage is not plan

    again = tmp_path / "again.parquet"  # the accumulated table exported again: its ids repeat, its curves stay apart
    one_curve = tmp_path / "one-curve.csv"
    for source, path, curves in ((table, again, "val.acc,val.repeat_acc"), (second, one_curve, "val.acc")):
        exported = subprocess.run([toylab, "export", str(source), "--to", str(path), "--curves", curves],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
        assert exported.returncode == 0, exported.stderr
    pd.testing.assert_frame_equal(fsm.learning_curves(str(again))[same].sort_values(same[:5]).reset_index(drop=True),
                                  from_table, check_dtype=False)
    with pytest.raises(ValueError, match="has no curve of val.repeat_acc: export it with --curves"):
        fsm.hypotheses_by_budget(str(one_curve), [2])

    gating = "gating beats 4x the parameters: small LSTM (68K) > vanilla RNN (270K)"
    final = fsm.hypotheses(stores).set_index("claim").loc[gating]
    read = fsm.hypotheses(str(table)).set_index("claim").loc[gating]
    assert (read["A"], read["B"], read["verdict"]) == (final["A"], final["B"], final["verdict"])
    assert "(n=2)" in read["A"] and "(n=2)" in read["B"]
    by_budget = fsm.hypotheses_by_budget(str(table), [2, 6]).set_index(["epochs", "claim"])
    assert by_budget.loc[(6, gating), "difference"] == pytest.approx(final["difference"])
    assert by_budget.loc[(2, gating), "verdict"].startswith("not converged: small_lstm 5s5a 0 of 2 runs")

    # the notebook reads the table as `python -m analysis.notebooks --source TABLE fsm_icl` renders it:
    # TOYLAB_RUNS_TABLE, before any store in the environment
    import nbformat
    from nbclient import NotebookClient

    from analysis.notebooks import _describe

    monkeypatch.setenv("TOYLAB_RUNS_TABLE", str(table))
    notebook = nbformat.read(REPO / "notebooks" / "fsm_icl.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(REPO)}}).execute()
    text = "\n".join(str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
                     for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)
    assert f"6 completed training runs of fsm_icl in {table}" in text  # not the 3 of the store in TOYLAB_RUNS_DIR
    assert "small_lstm 5s5a after easy" in text
    assert _describe(str(table)) == {"source": str(table), "runs_in_table": 6}

    out = tmp_path / "figures"
    drawn = subprocess.run([toylab, "figures", "--source", str(table), "--out", str(out), "--only", "fsm_budget"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert drawn.returncode == 0, drawn.stderr
    assert (out / "fsm_budget.png").stat().st_size > 10_000
