"""In-context learning of finite-state machines: the data, the models, the experiment end
to end (every model type, the curriculum link, the probe, bad input) and the behaviour
the replication is about, on a CPU-sized config."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import harness
import sweeps
from conftest import run_script
from toymodels import fsm, fsm_train, sequence_models


def walks(n_states=5, n_actions=5, absorbing=False, T=40, N=200, seed=0, split="train"):
    return fsm.generate_walks(fsm.WalkSpec(n_states, n_actions, absorbing, T, N, seed, split))


# ------------------------------------------------------------------ data
def test_walks_follow_their_own_machine_and_every_sequence_has_a_new_one():
    w = walks(n_states=5, n_actions=8)
    N, T = w.actions.shape
    assert w.tables.shape == (N, 5, 8) and w.states.shape == (N, T + 1)
    assert w.states.min() >= 0 and w.states.max() < 5 and w.actions.max() < 8
    for n in range(N):
        for t in range(T):
            assert w.states[n, t + 1] == w.tables[n, w.states[n, t], w.actions[n, t]]
    distinct = {w.tables[n].tobytes() for n in range(N)}
    assert len(distinct) == N  # 5^40 tables: a repeat would mean one machine reused
    # deterministic in the seed; train and val are different draws
    again = walks(n_states=5, n_actions=8)
    assert np.array_equal(again.tables, w.tables) and np.array_equal(again.states, w.states)
    assert not np.array_equal(walks(n_states=5, n_actions=8, split="val").tables, w.tables)
    assert not np.array_equal(walks(n_states=5, n_actions=8, seed=1).tables, w.tables)


def test_absorbing_state_absorbs():
    w = walks(absorbing=True, T=60)
    N = len(w.tables)
    absorber = w.absorbing_state
    assert np.all(w.tables[np.arange(N), absorber] == absorber[:, None])
    reached = 0
    for n in range(N):
        hits = np.flatnonzero(w.states[n] == absorber[n])
        if len(hits):
            reached += 1
            assert np.all(w.states[n, hits[0]:] == absorber[n])  # never leaves
    assert reached > 0.9 * N  # with 5 states it is reached quickly
    assert np.all(walks().absorbing_state == fsm.NO_ABSORBER)
    split = fsm.to_split(w, 8)
    assert torch.equal(split.trivial, torch.from_numpy(w.states[:, :-1] == absorber[:, None]))


def test_repeat_counts_and_seen_entries_match_a_direct_count():
    w = walks(n_states=3, n_actions=2, T=30, N=50)
    counts = fsm.repeat_counts(w.states, w.actions, 2, chunk=7)  # several chunks
    seen, table = fsm.seen_entries(w)
    for n in range(len(counts)):
        pairs = [(w.states[n, t], w.actions[n, t]) for t in range(30)]
        for t, pair in enumerate(pairs):
            assert counts[n, t] == pairs[:t].count(pair)
            for s in range(3):
                for a in range(2):
                    assert seen[n, t, s * 2 + a] == ((s, a) in pairs[:t])
    assert np.array_equal(table, w.tables.reshape(len(w.tables), -1))
    p_first = fsm.first_occurrence_fraction(counts)
    assert p_first == (counts == 0).mean()
    assert fsm.accuracy_ceiling(counts, 3) == pytest.approx(1 - p_first * (1 - 1 / 3))


def test_tokens_interleave_states_and_actions_in_the_shared_vocabulary():
    w = walks(n_states=3, n_actions=3, T=5, N=4)
    split = fsm.to_split(w, vocab_states=8)
    assert split.tokens.shape == (4, 10) and split.targets.shape == (4, 5)
    assert torch.equal(split.tokens[:, 0::2], torch.from_numpy(w.states[:, :5]))
    assert torch.equal(split.tokens[:, 1::2], torch.from_numpy(w.actions + 8))
    assert torch.equal(split.targets, torch.from_numpy(w.states[:, 1:]))


def test_datasets_are_cached_by_their_parameters(tmp_path):
    spec = fsm.WalkSpec(5, 5, False, 16, 32, 3, "val")
    first = fsm.load_walks(spec, tmp_path)
    [cached] = list(tmp_path.iterdir())
    assert cached.name == spec.cache_name()
    cached.write_bytes(cached.read_bytes())  # same bytes: reading must give the same walks
    again = fsm.load_walks(spec, tmp_path)
    assert np.array_equal(again.states, first.states) and np.array_equal(again.tables, first.tables)
    fsm.load_walks(fsm.WalkSpec(5, 5, True, 16, 32, 3, "val"), tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # other parameters: another file


def test_fresh_walks_are_new_machines_every_epoch_and_leave_the_fixed_set_as_it_was():
    fixed = fsm.WalkSpec(5, 5, False, 16, 32, 3, "train")
    # the fixed set's stream is the one it always had (seeded by [seed, split index] only)
    rng = np.random.default_rng([3, 0])
    assert np.array_equal(fsm.generate_walks(fixed).tables, rng.integers(0, 5, size=(32, 5, 5)))
    draws = [fsm.generate_walks(fsm.WalkSpec(5, 5, False, 16, 32, 3, "train", draw)) for draw in (0, 1)]
    assert not np.array_equal(draws[0].tables, draws[1].tables)
    assert not np.array_equal(draws[0].tables, fsm.generate_walks(fixed).tables)
    assert np.array_equal(draws[1].tables, fsm.generate_walks(fsm.WalkSpec(5, 5, False, 16, 32, 3, "train", 1)).tables)
    assert fsm.WalkSpec(5, 5, False, 16, 32, 3, "train", 1).cache_name() != fixed.cache_name()

    # train() asks for each epoch's walks and measures train.* on them
    asked = []

    def fresh(epoch):
        asked.append(epoch)
        return fsm.to_split(draws[epoch % 2], 8)

    model = sequence_models.build_model("lstm", 16, 8, 8, 1, 32)
    settings = fsm_train.TrainSettings(3, 16, 1e-3, 1.0, 0, 2, 0)
    fixed_split = fsm.to_split(fsm.generate_walks(fixed), 8)
    fsm_train.train(model, fixed_split, fixed_split, settings, torch.device("cpu"), lambda e, m: None,
                    fresh_walks=fresh)
    assert asked == [0, 1, 2]


def test_a_run_on_fresh_walks_trains_on_new_machines_and_caches_only_the_fixed_sets(tmp_path):
    from experiments.fsm_icl import ex

    data_dir = tmp_path / "data"
    tiny = {"n_transitions": 8, "train_sequences": 32, "val_sequences": 16, "eval_sequences": 0, "epochs": 3,
            "batch_size": 16, "d_model": 8, "data_dir": str(data_dir), "fresh_walks": True}
    run = ex.run(named_configs=["small_lstm_5s5a"], config_updates=tiny)
    assert run.status == "COMPLETED" and run.config["fresh_walks"] is True
    # the fixed training set (the probes' walks) and the validation set are cached; the draws are not
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(
        fsm.WalkSpec(5, 5, False, 8, n, 0, split).cache_name() for n, split in ((32, "train"), (16, "val")))
    with pytest.raises(Exception, match="fresh_walks=1 is not allowed: use true or false"):
        ex.run(named_configs=["small_lstm_5s5a"], config_updates={**tiny, "fresh_walks": 1})


def test_a_bad_fresh_walks_on_the_command_line_is_one_line_and_records_nothing(tmp_path):
    runs = tmp_path / "runs"
    result = run_script(["experiments/fsm_icl.py", "with", "small_lstm_5s5a", "cpu", "fresh_walks=yes"],
                        env={"TOYLAB_RUNS_DIR": str(runs)})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0] == "harness.ConfigError: fresh_walks='yes' is not allowed: use true or false"
    assert not runs.exists() or not any(runs.iterdir())


class ContextLookup(torch.nn.Module):
    """An exact in-context learner: the next state after the last earlier occurrence of the
    current (state, action) pair, state 0 when the pair is new."""

    def forward(self, tokens):
        states, actions = tokens[:, 0::2], tokens[:, 1::2]
        B, T = states.shape
        logits = torch.zeros(B, 2 * T, 8)
        for b in range(B):
            for t in range(T):
                answer = 0
                for earlier in range(t - 1, -1, -1):
                    if states[b, earlier] == states[b, t] and actions[b, earlier] == actions[b, t]:
                        answer = int(states[b, earlier + 1])
                        break
                logits[b, 2 * t + 1, answer] = 1.0
        return logits


def test_the_in_context_curve_of_an_exact_in_context_learner():
    split = fsm.to_split(walks(T=30, N=40), 8)
    metrics = fsm_train.evaluate(ContextLookup(), split, 16, 3, torch.device("cpu"))
    assert metrics["repeat_acc"] == 1.0
    assert metrics["icl_acc.1"] == metrics["icl_acc.2"] == metrics["icl_acc.3"] == 1.0
    first = (split.counts == 0)
    assert metrics["first_acc"] == pytest.approx((split.targets[first] == 0).double().mean().item())
    assert metrics["acc"] == pytest.approx(1 - first.double().mean().item() * (1 - metrics["first_acc"]))


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("named, low, high", [
    ("lstm_5s5a", 0.9e6, 1.2e6), ("small_lstm_5s5a", 60e3, 75e3), ("vanilla_rnn_5s5a", 240e3, 300e3),
    ("small_vanilla_5s5a", 14e3, 22e3), ("deep_rnn_5s5a", 0.9e6, 1.2e6), ("transformer_5s5a", 80e3, 140e3),
])
def test_parameter_counts_of_the_named_models(named, low, high):
    from experiments.fsm_icl import ex, make_model

    count = sequence_models.n_parameters(make_model(ex.run("print_config", named_configs=[named]).config))
    assert low <= count <= high
    if named == "deep_rnn_5s5a":  # parameter-matched to the large LSTM
        lstm = sequence_models.n_parameters(make_model(ex.run("print_config", named_configs=["lstm_5s5a"]).config))
        assert abs(count - lstm) / lstm < 0.02


PLAN_EPOCHS = {"lstm_5s5a": 32, "vanilla_rnn_5s5a": 21, "small_lstm_5s5a": 32, "small_vanilla_5s5a": 32,
               "deep_rnn_5s5a": 32, "transformer_5s5a": 32, "lstm_5s8a": 48, "small_lstm_5s8a": 64, "lstm_8s8a": 100,
               "lstm_absorbing": 32}


def test_named_configs_carry_the_plans_epochs_and_the_cpu_plan_its_own():
    from experiments.fsm_icl import SWEEPS, ex

    for named, epochs in PLAN_EPOCHS.items():
        assert ex.run("print_config", named_configs=[named]).config["epochs"] == epochs, named
        assert ex.run("print_config", named_configs=[named, "cpu"]).config["epochs"] == 80  # cpu, named last, wins
    from experiments.fsm_icl import CPU_EPOCHS

    for point in sweeps.expand("fsm_icl", SWEEPS["plan_cpu"]):  # each point: the model's named config, then cpu
        config = ex.run("print_config", named_configs=list(point.named_configs), config_updates=point.updates).config
        assert point.named_configs[-1] == "cpu" and config["fresh_walks"]
        assert config["epochs"] == CPU_EPOCHS.get(point.named_configs[0], 80)  # cpu's 80, or a doubling of it
    assert set(PLAN_EPOCHS) == {p.named_configs[-1] for p in sweeps.expand("fsm_icl", SWEEPS["plan"])}


def test_hidden_states_are_per_layer_and_end_in_the_logits():
    tokens = torch.randint(0, 16, (3, 12))
    for model in ("lstm", "rnn", "transformer"):
        net = sequence_models.build_model(model, 16, 8, 16, 3, 12)
        states = net.hidden_states(tokens)
        assert len(states) == 4 and all(s.shape == (3, 12, 16) for s in states)
        assert net(tokens).shape == (3, 12, 8)


# ------------------------------------------------------------------ the experiment end to end
@pytest.fixture
def data_dir(tmp_path):
    return str(tmp_path / "data")


TINY = {"n_transitions": 12, "train_sequences": 64, "val_sequences": 32, "eval_sequences": 0, "epochs": 2,
        "batch_size": 16, "d_model": 16, "probe_sequences": 16, "probe_epochs": 0}


def run_dir(run):
    return Path(os.environ["TOYLAB_RUNS_DIR"]) / str(run._id)


@pytest.mark.parametrize("named", ["small_lstm_5s5a", "small_vanilla_5s5a", "deep_rnn_5s5a", "transformer_5s5a",
                                   "lstm_absorbing"])
def test_every_model_type_runs_and_records_its_curves(named, data_dir):
    from experiments.fsm_icl import ex

    run = ex.run(named_configs=[named], config_updates={**TINY, "data_dir": data_dir})
    assert run.status == "COMPLETED"
    record = run_dir(run)
    metrics = json.loads((record / "metrics.json").read_text())
    for name in ("train.loss", "train.acc", "val.loss", "val.acc", "val.first_acc", "val.icl_acc.0",
                 "val.icl_acc.1"):
        assert metrics[name]["steps"] == [0, 1], name
    result = run.result
    assert result["n_parameters"] == sequence_models.n_parameters(
        sequence_models.build_model(run.config["model"], 16, 8, 16, run.config["num_layers"], 24))
    assert result["final_val_acc"] == metrics["val.acc"]["values"][-1]
    assert result["best_val_acc"] == max(metrics["val.acc"]["values"])
    assert result["final_val_icl_acc"][0] == metrics["val.icl_acc.0"]["values"][-1]
    assert 0 < result["p_first"] < 1 and result["chance"] == 1 / run.config["n_states"]
    checkpoint = torch.load(record / "best.pt", weights_only=True)
    assert checkpoint["epoch"] == result["best_epoch"] and checkpoint["val_acc"] == result["best_val_acc"]
    for name in ("accuracy.png", "in_context_curve.png"):
        assert (record / name).read_bytes()[:4] == b"\x89PNG"
    assert any(Path(data_dir).iterdir())  # the walks were cached


def test_curriculum_link_and_probe_run(data_dir):
    from experiments.fsm_icl import ex

    easy = ex.run(named_configs=["small_lstm_5s5a"], config_updates={**TINY, "dataset": "easy", "data_dir": data_dir})
    # lr ~0: the next stage's best model must be the one it started from
    hard = ex.run(named_configs=["small_lstm_5s5a"], config_updates={**TINY, "dataset": "8s8a", "epochs": 1,
                                                                     "lr": 1e-12, "init_from": easy._id,
                                                                     "data_dir": data_dir})
    assert hard.status == "COMPLETED" and hard.config["init_from"] == easy._id
    assert hard.info["init_from"]["run"] == easy._id and hard.info["init_from"]["dataset"] == "easy"
    start = torch.load(run_dir(easy) / "best.pt", weights_only=True)["model_state"]
    end = torch.load(run_dir(hard) / "best.pt", weights_only=True)["model_state"]
    assert all(torch.allclose(start[key], end[key], atol=1e-6) for key in start)

    probe = ex.run(named_configs=["small_lstm_5s5a", "probe"],
                   config_updates={**TINY, "probe_epochs": 2, "init_from": easy._id, "data_dir": data_dir})
    assert probe.status == "COMPLETED"
    metrics = json.loads((run_dir(probe) / "metrics.json").read_text())
    for layer in range(3):  # the embedding and the two LSTM layers
        for name in ("state_acc", "table_acc", "unseen_acc"):
            assert metrics[f"probe.layer{layer}.{name}"]["steps"] == [0, 1]
            assert 0 <= probe.result[f"probe_{name}_layer{layer}"] <= 1
    assert "val.acc" not in metrics and not (run_dir(probe) / "best.pt").exists()


def test_curriculum_reads_the_checkpoint_from_mongodb(monkeypatch, tmp_path, data_dir):
    import pymongo

    from experiments.fsm_icl import ex
    from faults import MongomockBackend

    backend = MongomockBackend(monkeypatch, tmp_path / "fallback")
    monkeypatch.setattr(pymongo, "MongoClient", lambda *a, **k: backend.client)
    monkeypatch.setenv("TOYLAB_MONGO_URL", "mongodb://mongomock")
    first = ex.run(named_configs=["small_vanilla_5s5a"], config_updates={**TINY, "data_dir": data_dir})
    second = ex.run(named_configs=["small_vanilla_5s5a"], config_updates={**TINY, "init_from": first._id,
                                                                           "data_dir": data_dir})
    assert second.info["init_from"]["run"] == first._id
    assert backend.db.runs.find_one({"_id": second._id})["config"]["init_from"] == first._id
    backend.close()


@pytest.mark.parametrize("update, key, says", [
    ({"init_from": 999}, "init_from", "no artifact best.pt for run 999"),
    ({"model": "gru"}, "model", "lstm, rnn, transformer"),
    ({"dataset": "9s9a"}, "dataset", "easy, 5s5a"),
    ({"d_model": 0}, "d_model", ">= 1"),
    ({"num_layers": 0}, "num_layers", ">= 1"),
    ({"n_states": 1}, "n_states", ">= 2"),
    ({"n_actions": 1}, "n_actions", ">= 2"),
    ({"kind": "probe"}, "kind", "needs init_from"),
    ({"kind": "probe", "init_from": 1, "probe_epochs": 0}, "probe_epochs", ">= 1 epoch"),
])
def test_bad_input_is_refused_before_a_run(update, key, says, data_dir):
    from experiments.fsm_icl import ex

    with pytest.raises(harness.ConfigError) as refused:
        ex.run(config_updates={**TINY, **update, "data_dir": data_dir})
    assert str(refused.value).startswith(f"{key}=") and "not allowed" in str(refused.value)
    assert says in str(refused.value)
    assert not Path(os.environ["TOYLAB_RUNS_DIR"]).exists() or not any(Path(os.environ["TOYLAB_RUNS_DIR"]).iterdir())


def test_a_checkpoint_that_does_not_fit_is_one_line_and_records_nothing(tmp_path, data_dir):
    from experiments.fsm_icl import ex

    small = ex.run(named_configs=["small_lstm_5s5a"], config_updates={**TINY, "epochs": 1, "data_dir": data_dir})
    runs = Path(os.environ["TOYLAB_RUNS_DIR"])
    result = run_script(["experiments/fsm_icl.py", "with", "small_vanilla_5s5a", f"init_from={small._id}",
                         f"data_dir={data_dir}"], env={"TOYLAB_RUNS_DIR": str(runs)})
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("harness.ConfigError: init_from=1 is not allowed: its checkpoint does not fit")
    assert "model='lstm'" in lines[0]  # says what the checkpoint is
    assert sorted(p.name for p in runs.iterdir() if p.name.isdigit()) == [str(small._id)]


# ------------------------------------------------------------------ behaviour
def test_an_lstm_learns_in_context_repeats_far_above_chance_first_occurrences_at_chance(data_dir):
    """CPU-sized: a small LSTM on the easy machines (3 states, 3 actions), 250 steps. Pairs
    seen before are predicted far above chance (1/3); pairs seen for the first time cannot
    be known and stay near chance. (Seeds 0-2 measured: repeats 0.72-0.75, first 0.335-0.337.)"""
    from experiments.fsm_icl import ex

    run = ex.run(named_configs=["small_lstm_5s5a", "cpu"],
                 config_updates={"dataset": "easy", "train_sequences": 1000, "epochs": 8, "val_sequences": 300,
                                 "eval_sequences": 300, "data_dir": data_dir, "seed": 0,
                                 "lr": 3e-3})  # faster than cpu's 1e-3: 250 steps are enough to learn at all
    result = run.result
    chance = result["chance"]
    assert result["final_val_repeat_acc"] > chance + 0.25, result
    assert abs(result["final_val_first_acc"] - chance) < 0.08, result
    icl = result["final_val_icl_acc"]
    assert icl[-1] > icl[1] > icl[0]  # more occurrences, more certainty
