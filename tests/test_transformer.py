"""Transformer grokking: modular datasets, the causal transformer, its trainer and the
experiment's transformer configs end to end."""
import json
import os
from pathlib import Path

import pytest
import torch

import harness
from experiments.grokking_transformer import ex
from conftest import run_script
from toymodels.modular import apply_operation, make_modular_task, modular_inverses, n_examples
from toymodels.transformer import TrainSettings, Transformer, TransformerConfig, train, warmup_factor

PYTHON_OPS = {"addition": lambda a, b, p: (a + b) % p, "subtraction": lambda a, b, p: (a - b) % p,
              "multiplication": lambda a, b, p: (a * b) % p, "division": lambda a, b, p: (a * pow(b, -1, p)) % p}


# --------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("operation", list(PYTHON_OPS))
def test_labels_match_python_arithmetic(operation):
    p = 11
    task = make_modular_task(p, operation, 0.5, seed=0)
    expected = [PYTHON_OPS[operation](a, b, p) for a, b in zip(task.a.tolist(), task.b.tolist())]
    assert task.answers.tolist() == expected
    pairs = set(zip(task.a.tolist(), task.b.tolist()))
    assert len(pairs) == len(task.a) == n_examples(p, operation)  # every pair exactly once
    if operation == "division":
        assert 0 not in task.b.tolist() and len(pairs) == p * (p - 1)
        assert ((task.answers * task.b) % p == task.a).all()  # c * b = a: c really is a / b
    else:
        assert len(pairs) == p * p


def test_division_needs_a_prime_and_a_nonzero_divisor():
    assert [(b * inv) % 7 for b, inv in enumerate(modular_inverses(7).tolist())][1:] == [1] * 6
    with pytest.raises(ValueError, match="prime"):
        make_modular_task(10, "division", 0.5, seed=0)
    with pytest.raises(ValueError, match="zero"):
        apply_operation(torch.tensor([1]), torch.tensor([0]), "division", 7)


@pytest.mark.parametrize("p, operation, fraction", [(13, "addition", 0.3), (13, "division", 0.5), (97, "division", 0.5)])
def test_split_sizes_and_determinism(p, operation, fraction):
    task = make_modular_task(p, operation, fraction, seed=3)
    n = n_examples(p, operation)
    assert int(task.train_mask.sum()) == round(fraction * n)
    assert len(task.split(train=True)[0]) + len(task.split(train=False)[0]) == n
    again, other = make_modular_task(p, operation, fraction, seed=3), make_modular_task(p, operation, fraction, seed=4)
    assert torch.equal(again.train_mask, task.train_mask) and not torch.equal(other.train_mask, task.train_mask)


def test_token_formats_of_the_papers():
    power = make_modular_task(7, "division", 0.5, seed=0, sequence="power")
    row = int(((power.a == 3) & (power.b == 5)).nonzero())
    assert power.decode(row) == "<eos> 3 / 5 = 2 <eos>"  # 2 * 5 = 10 = 3 mod 7
    assert power.context_length == 5 and power.vocab_size == 7 + 3 and power.n_outputs == power.vocab_size
    assert torch.equal(power.sequences[:, :5], power.inputs) and torch.equal(power.sequences[:, 5], power.answers)
    nanda = make_modular_task(113, "addition", 0.3, seed=0, sequence="nanda")
    assert nanda.inputs.shape == (113 * 113, 3) and (nanda.inputs[:, 2] == 113).all()
    assert nanda.vocab_size == 114 and nanda.n_outputs == 113
    assert int(nanda.train_mask.sum()) == 3831


# ------------------------------------------------------------------------ transformer
POWER = dict(n_layers=2, layer_norm=True, positions="sinusoidal")
NANDA = dict(n_layers=1, layer_norm=False, positions="learned", embedding_std=128 ** -0.5)


@pytest.mark.parametrize("options", [POWER, NANDA], ids=["power", "nanda"])
def test_shapes_and_causal_mask(options):
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=20, n_outputs=17, context_length=6, **options)).eval()
    tokens = torch.randint(0, 20, (4, 6))
    logits = model(tokens)
    assert logits.shape == (4, 6, 17)
    assert torch.allclose(model(tokens, last_only=True), logits[:, -1], atol=1e-5)
    for t in range(1, 6):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % 20
        other = model(changed)
        assert torch.allclose(other[:, :t], logits[:, :t], atol=1e-6), t  # earlier positions never see it
        assert not torch.allclose(other[:, t:], logits[:, t:], atol=1e-4), t  # later ones do


def test_layer_norm_and_positions_follow_the_options():
    def names(options):
        return {n for n, _ in Transformer(TransformerConfig(10, 10, 3, **options)).named_parameters()}
    power, nanda = names(POWER), names(NANDA)
    assert any("ln_" in n for n in power) and not any("ln_" in n for n in nanda)
    assert "positions" in nanda and "positions" not in power  # learned vs fixed sinusoidal buffer
    assert sum("blocks.1." in n for n in power) > 0 and not any("blocks.1." in n for n in nanda)


def test_warmup_is_linear_over_the_first_steps():
    assert [warmup_factor(s, 10) for s in (0, 4, 9, 10, 500)] == [0.1, 0.5, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("batch_size, eval_every", [(0, 1), (64, 5)])
def test_threshold_steps_agree_with_logged_metrics(batch_size, eval_every):
    task = make_modular_task(11, "addition", 0.7, seed=0, sequence="nanda")
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(task.vocab_size, task.n_outputs, task.context_length, **NANDA))
    logged = {}
    outcome = train(model, task, TrainSettings(train_steps=151, batch_size=batch_size, eval_every=eval_every),
                    log_every=10, on_log=lambda step, metrics: logged.update({step: metrics}), device="cpu",
                    chunk_steps=40, progress=False)
    steps = sorted(logged)
    assert steps[-1] == 150 and all(s % eval_every == 0 for s in steps)
    assert outcome.t_train is not None  # 85 pairs are memorised within 150 steps
    for name, key in (("t_train", "train.acc"), ("t_test", "test.acc")):
        crossed = [s for s in steps if logged[s][key] >= 0.9]
        assert (crossed[0] if crossed else None) == getattr(outcome, name)
    assert outcome.final == logged[150] and outcome.steps == 151
    n_train = int(task.train_mask.sum())  # accuracies are exact fractions of the split
    assert all(abs(logged[s]["train.acc"] * n_train - round(logged[s]["train.acc"] * n_train)) < 1e-9 for s in steps)


# ------------------------------------------------------------------------- experiment
def test_named_configs_follow_the_papers():
    power = ex.run("print_config", named_configs=["power"]).config
    assert (power["p"], power["operation"], power["sequence"], power["train_fraction"]) == (
        97, "division", "power", 0.5)
    assert (power["n_layers"], power["d_model"], power["n_heads"], power["d_mlp"]) == (2, 128, 4, 512)
    assert (power["layer_norm"], power["positions"], power["batch_size"], power["train_steps"]) == (
        True, "sinusoidal", 512, 100000)
    assert ex.run("print_config", named_configs=["power"], config_updates={"p": 7}).config["batch_size"] == 10
    nanda = ex.run("print_config", named_configs=["nanda"]).config
    assert (nanda["p"], nanda["operation"], nanda["sequence"], nanda["train_fraction"], nanda["batch_size"]) == (
        113, "addition", "nanda", 0.3, 0)
    assert (nanda["n_layers"], nanda["d_model"], nanda["n_heads"], nanda["d_mlp"]) == (1, 128, 4, 512)
    assert (nanda["layer_norm"], nanda["positions"], nanda["lr"], nanda["weight_decay"]) == (False, "learned", 1e-3, 1.0)
    for config in (power, nanda):
        assert (config["warmup_steps"], config["device"]) == (10, "auto")


@pytest.mark.parametrize("updates, key", [({"operation": "power"}, "operation"), ({"n_heads": 3}, "n_heads"),
                                          ({"p": 12, "operation": "division"}, "p"),
                                          ({"batch_size": 100000}, "batch_size"), ({"eval_every": 3}, "eval_every"),
                                          ({"lr": 0}, "lr")])
def test_bad_transformer_keys_are_refused(updates, key):
    with pytest.raises(harness.ConfigError, match=f"^{key}="):
        ex.run(config_updates=updates)
    assert not list(Path(os.environ["TOYLAB_RUNS_DIR"]).glob("[0-9]*"))  # no run recorded


def test_bad_key_on_the_command_line_is_one_line_and_exit_status():
    result = run_script(["experiments/grokking_transformer.py", "with", "small", "positions=rotary"], timeout=120)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and "pkg_resources" not in line]
    assert lines[0].startswith("harness.ConfigError: positions='rotary' is not allowed"), result.stderr


def test_power_config_runs_with_minibatches():
    """A few steps of the full Power config: division mod 97 with batches of 512."""
    run = ex.run(named_configs=["power"], config_updates={"train_steps": 3, "log_every": 1})
    assert run.status == "COMPLETED" and run.result["steps"] == 3
    assert (run.result["n_train"], run.result["n_test"]) == (4656, 4656) and run.result["phase"] == "confusion"
    assert run.result["final_train_acc"] < 0.1  # chance is 1/100 over Power's vocabulary


def test_small_config_groks_and_is_recorded():
    """The CI-sized transformer run: memorises first, generalises >= 0.9 much later."""
    run = ex.run(named_configs=["small"])
    run_dir = Path(os.environ["TOYLAB_RUNS_DIR"]) / str(run._id)
    record = json.loads((run_dir / "run.json").read_text())
    result, info = record["result"], json.loads((run_dir / "info.json").read_text())
    assert record["status"] == "COMPLETED"
    assert result["t_train"] is not None and result["t_test"] is not None
    assert result["t_test"] - result["t_train"] >= run.config["phase_margin"] and result["phase"] == "grokking"
    assert result["final_test_acc"] >= 0.9 and result["final_train_acc"] >= 0.99
    for key in ("t_train", "t_test", "phase", "final_train_acc", "final_test_acc"):
        assert info[key] == result[key]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"train.loss", "train.acc", "test.loss", "test.acc"}
    steps, values = metrics["test.acc"]["steps"], metrics["test.acc"]["values"]
    assert steps[[v >= 0.9 for v in values].index(True)] == result["t_test"]  # the crossing is logged exactly
    assert values[steps.index(result["t_train"])] < 0.9  # test still fails when train is fitted
    for name in ("training_curves.png", "model.pt"):
        assert (run_dir / name).stat().st_size > 1000, name
    state = torch.load(run_dir / "model.pt")
    assert state["unembed.weight"].shape == (31, 128)  # Nanda: logits over the p residues only
