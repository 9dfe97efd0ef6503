"""The shared harness: declarative config checks, artifacts, checkpoints, the end-of-run report."""
import json
import os
from pathlib import Path

import pytest

import harness

CONFIG = {"loss": "mse", "p": 10, "lr": 1e-3, "decay": 0.0, "flag": True, "fraction": 0.5, "every": 1000,
          "d_model": 128, "n_heads": 4, "device": "cpu", "nested": {"width": 8}}


@pytest.mark.parametrize("check, key, value, why", [
    (harness.choice({"loss": ("mse", "cross_entropy")}), "loss", "hinge", "use one of mse, cross_entropy"),
    (harness.integer({"p": 2}), "p", 1, "p must be an integer >= 2"),
    (harness.integer({"p": 2}), "p", 2.5, "p must be an integer >= 2"),
    (harness.integer({"p": 2}), "p", True, "p must be an integer >= 2"),  # a bool is not an integer here
    (harness.integer({"nested.width": 1}), "nested.width", 0, "nested.width must be an integer >= 1"),
    (harness.boolean("flag"), "flag", 1, "use true or false"),
    (harness.positive("lr"), "lr", 0, "lr must be > 0"),
    (harness.positive("lr"), "lr", "fast", "lr must be > 0"),
    (harness.non_negative("decay"), "decay", -1e-3, "decay must be >= 0"),
    (harness.within("fraction", 0, 1), "fraction", 1, "fraction must be in (0, 1)"),
    (harness.within("fraction", 0, 1, closed="high"), "fraction", 0, "fraction must be in (0, 1]"),
    (harness.multiple_of("every", 500), "every", 750, "it must be a multiple of 500"),
    (harness.divides("n_heads", "d_model"), "n_heads", 3, "it must divide d_model=128"),
    (harness.rule("p", lambda c: c["p"] % 2 == 0, "p must be even"), "p", 5, "p must be even"),
])
def test_each_check_refuses_with_the_one_line_and_accepts_the_default(check, key, value, why):
    check(CONFIG)  # the valid config passes
    config = json.loads(json.dumps(CONFIG))
    section = config
    *parents, name = key.split(".")
    for parent in parents:
        section = section[parent]
    section[name] = value
    with pytest.raises(harness.ConfigError) as refused:
        check(config)
    assert str(refused.value) == f"{key}={value!r} is not allowed: {why}"


def test_cuda_check_refuses_cuda_only_without_a_device(monkeypatch):
    import torch

    check = harness.cuda_available("device")
    check({**CONFIG, "device": "cuda"}) if torch.cuda.is_available() else None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check(CONFIG)
    with pytest.raises(harness.ConfigError, match=r"^device='cuda' is not allowed: no CUDA device here"):
        check({**CONFIG, "device": "cuda"})


def test_checks_hook_stops_at_the_first_refusal_and_skips_conditional_rules():
    hook = harness.checks(harness.positive("lr"), harness.rule("p", lambda c: False, "never", when=lambda c: False))
    assert hook(CONFIG, "main", None) == {}
    with pytest.raises(harness.ConfigError, match="^lr="):
        harness.checks(harness.positive("lr"), harness.integer({"p": 100}))({**CONFIG, "lr": -1}, "main", None)


def make_experiment():
    ex = harness.experiment("harness_probe")

    @ex.config
    def config():
        steps = 10  # a documented entry
        every = 4

    @ex.named_config
    def longer():
        """Twice the steps."""
        steps = 20

    ex.config_hook(harness.checks(harness.integer({"steps": 1})))

    @ex.main
    def main(_run, steps, every):
        import matplotlib.pyplot as plt

        checkpoints = harness.Checkpoints(_run, every=every, last_step=steps)
        with pytest.raises(RuntimeError), checkpoints.kept_on_interrupt():
            for step in range(1, steps + 1):
                checkpoints.update({"next_step": step})
            raise RuntimeError("stopped")  # what an interrupt does: the newest state is saved on the way out
        harness.save_figure(_run, plt.figure(), "figure.png")
        harness.save_json(_run, {"a": 1}, "table.json")
        harness.save_text(_run, "hello", "note.txt")
        harness.report(_run, f"done after {steps} steps")
        return steps

    return ex


def test_experiment_records_artifacts_checkpoints_and_a_documented_named_config(capsys):
    import torch

    ex = make_experiment()
    run = ex.run(named_configs=["longer"])
    run_dir = Path(os.environ["TOYLAB_RUNS_DIR"]) / str(run._id)
    assert run.result == 20 and "__doc__" not in json.loads((run_dir / "config.json").read_text())
    assert json.loads((run_dir / "table.json").read_text()) == {"a": 1}
    assert (run_dir / "note.txt").read_text() == "hello"
    assert (run_dir / "figure.png").read_bytes()[:4] == b"\x89PNG"
    # saved at steps 4, 8, 12, 16 (not at the last step), then once more, step 20, on the way out
    assert torch.load(run_dir / "checkpoint.pt")["next_step"] == 20
    out = capsys.readouterr().out
    assert f"run {run._id}: file storage" in out and "done after 20 steps" in out
    with pytest.raises(harness.ConfigError, match="^steps=0 is not allowed"):
        ex.run(config_updates={"steps": 0})
    assert len(list(run_dir.parent.glob("[0-9]*"))) == 1  # the refused config recorded nothing


def test_resume_state_reads_the_checkpoint_of_an_earlier_run():
    import torch

    ex = make_experiment()
    run = ex.run()
    state = {}

    class Run:
        info = state

    loaded = harness.resume_state(Run, run._id)
    assert loaded["next_step"] == 10 and state["resumed_from"] == {"run": run._id, "step": 10}
    assert harness.resume_state(Run, None) is None
    with pytest.raises(FileNotFoundError, match="no artifact checkpoint.pt for run 999"):
        harness.resume_state(Run, 999)
    del torch


def test_plateau_rule_on_known_curves():
    rising = {"acc": (list(range(10)), [0.1 * k for k in range(10)])}  # still gaining 0.2 in the last fifth
    flat = {"acc": (list(range(10)), [0.5, 0.8, 0.9, 0.95, 0.96, 0.965, 0.97, 0.97, 0.972, 0.971])}
    record = harness.plateau(rising, "acc")
    assert not record["plateaued"] and record["gain"] == pytest.approx(0.2) and record["window_from_step"] == 8
    assert harness.plateau(flat, "acc")["plateaued"] and harness.plateau(flat, "acc")["gain"] == pytest.approx(0.002)
    assert not harness.plateau({"acc": ([0, 1, 2], [0.9, 0.9, 0.9])}, "acc")["plateaued"]  # too few to tell
    assert not harness.plateau({}, "acc")["plateaued"]
    falling = {"l2": (list(range(10)), [1.0, 0.5, 0.3, 0.2, 0.15, 0.12, 0.11, 0.1, 0.099, 0.0995])}
    error = harness.plateau(falling, "l2", higher_is_better=False)
    assert error["gain"] == pytest.approx(0.001 / 0.1) and not error["plateaued"]  # 1.0% relative: not below 1%
    assert harness.plateau(falling, "l2", higher_is_better=False, tolerance=0.02)["plateaued"]
    assert "last 20%" in error["rule"] and error["metric"] == "l2"
    # an error far below its scale (the trivial predictor's error) that still halves has finished:
    # gain 5e-5 absolute (50% relative) against 1% of the scale 0.1667 = 1.7e-3
    tiny = {"l2": (list(range(10)), [0.1, 0.01, 1e-3, 5e-4, 3e-4, 2e-4, 1.5e-4, 1e-4, 8e-5, 5e-5])}
    assert not harness.plateau(tiny, "l2", higher_is_better=False)["plateaued"]
    scaled = harness.plateau(tiny, "l2", higher_is_better=False, scale=1 / 6)
    assert scaled["plateaued"] and scaled["gain"] == pytest.approx(0.5) and scaled["scale"] == pytest.approx(1 / 6)
    assert "0.00167 absolute" in scaled["rule"]
    assert not harness.plateau(falling, "l2", higher_is_better=False, scale=0.05)["plateaued"]  # 0.001 > 5e-4
    with pytest.raises(ValueError, match="scale is for errors"):
        harness.plateau(flat, "acc", scale=1.0)
