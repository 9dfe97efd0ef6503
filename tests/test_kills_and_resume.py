"""Real subprocesses killed with SIGINT, SIGTERM and SIGKILL; checkpoint and resume.

Injected: a signal sent to the grokking experiment once its first checkpoint exists.
Asserted: SIGINT / SIGTERM leave an INTERRUPTED run with every metric point up to the
kill and a checkpoint; SIGKILL leaves it RUNNING and the analysis reports it DEAD once
its heartbeat is stale; a run resumed from the checkpoint ends with exactly the final
metrics of a run that never stopped (same seed).
"""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

import analysis
from conftest import REPO

STEPS = 2500
ARGS = [f"train_steps={STEPS}", "log_every=10", "checkpoint_every=500"]


def start(runs, *extra):
    env = {"TOYLAB_RUNS_DIR": str(runs), "PATH": "/usr/bin:/bin"}
    return subprocess.Popen([sys.executable, "experiments/grokking.py", "with", *ARGS, *extra,
                             "--beat-interval=0.5"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} appeared:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def assert_metrics_up_to(run_dir, last_at_least):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = metrics["test.acc"]["steps"]
    regular = [s for s in steps if s % 10 == 0]
    assert regular == list(range(0, regular[-1] + 1, 10)), "a metric point before the kill is missing"
    assert regular[-1] >= last_at_least - 10
    assert all(len(metrics[name]["steps"]) == len(steps) for name in metrics)
    return regular[-1]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_metrics_and_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, sig):
    runs = tmp_path / "runs"
    process = start(runs)
    wait_for(runs / "1" / "checkpoint.pt", process)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, output  # what a shell reports for a process ended by sig
    assert "Traceback" not in output  # one line says what happened and where the run is
    assert f"run recorded as INTERRUPTED in file storage {runs / '1'}" in output
    run = json.loads((runs / "1" / "run.json").read_text())
    assert run["status"] == "INTERRUPTED", output
    checkpoint = torch.load(runs / "1" / "checkpoint.pt", weights_only=True)
    assert 500 <= checkpoint["next_step"] < STEPS
    assert_metrics_up_to(runs / "1", checkpoint["next_step"])
    if sig == signal.SIGTERM:
        return  # resumption is the same whichever signal stopped the run: checked once

    resumed = subprocess.run([sys.executable, "experiments/grokking.py", "with", *ARGS, "resume_from=1"],
                             cwd=REPO, env={"TOYLAB_RUNS_DIR": str(runs), "PATH": "/usr/bin:/bin"},
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    whole = subprocess.run([sys.executable, "experiments/grokking.py", "with", *ARGS],
                           cwd=REPO, env={"TOYLAB_RUNS_DIR": str(runs), "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    info_resumed = json.loads((runs / "2" / "info.json").read_text())
    info_whole = json.loads((runs / "3" / "info.json").read_text())
    assert info_resumed["resumed_from"] == {"run": 1, "step": checkpoint["next_step"]}
    for key in ("t_train", "t_test", "t_rqi", "phase", "final_train_acc", "final_test_acc", "final_rqi", "steps"):
        assert info_resumed[key] == info_whole[key], key
    points = analysis.metrics_table(str(runs), metric="train.loss")
    resumed_curve = points[points.run == 2].set_index("step")["value"]
    whole_curve = points[points.run == 3].set_index("step")["value"]
    assert resumed_curve.index[0] == checkpoint["next_step"]
    assert resumed_curve.equals(whole_curve.loc[resumed_curve.index]), "the resumed curve differs"


SIGTERM_DURING_AN_OBSERVER_CALL = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from sacred import Experiment
import observers

class SigtermWhileSavingAnArtifact(observers.AtomicFileStorageObserver):
    def artifact_event(self, name, filename, metadata=None, content_type=None):
        super().artifact_event(name, filename, metadata, content_type)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs inside this call, as a kill can
        self.after_the_signal = True

ex = observers.attach(Experiment("sigterm_during_artifact"))
ex.observers.append(SigtermWhileSavingAnArtifact({runs!r}))

@ex.main
def main(_run):
    _run.add_artifact(__file__, "checkpoint.py")
    print("main went on after the SIGTERM")

if __name__ == "__main__":
    ex.run_commandline()
"""


def test_sigterm_that_lands_inside_an_observer_call_still_interrupts_the_run(tmp_path):
    """Injected: SIGTERM delivered while an observer saves an artifact (as when a kill lands
    during a checkpoint save). Sacred guards every observer call with ``except Exception``;
    the interrupt must get through it instead of being swallowed and the run completing."""
    runs = tmp_path / "runs"
    script = tmp_path / "experiment.py"
    script.write_text(SIGTERM_DURING_AN_OBSERVER_CALL.format(repo=str(REPO), runs=str(runs)))
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 128 + signal.SIGTERM, finished.stderr
    assert "main went on" not in finished.stdout
    assert f"received SIGTERM: run recorded as INTERRUPTED in file storage {runs / '1'}" in finished.stderr.splitlines()
    assert "Traceback" not in finished.stderr
    assert json.loads((runs / "1" / "run.json").read_text())["status"] == "INTERRUPTED"


def test_sigkill_leaves_running_and_the_analysis_reports_dead(tmp_path):
    runs = tmp_path / "runs"
    process = start(runs)
    wait_for(runs / "1" / "checkpoint.pt", process)
    time.sleep(0.6)  # one heartbeat with metrics
    process.kill()
    process.communicate(timeout=60)
    table = analysis.runs_table(str(runs), dead_after=3600)
    assert table["status"].tolist() == ["RUNNING"]  # heartbeat recent: might still be running elsewhere
    time.sleep(1.5)
    table = analysis.runs_table(str(runs), dead_after=1)
    assert table[["status", "recorded_status"]].values.tolist() == [["DEAD", "RUNNING"]]
    assert len(analysis.metrics_table(str(runs), metric="train.loss")) > 0


def test_a_write_killed_half_way_leaves_the_previous_metrics_file_whole(tmp_path, monkeypatch):
    """Injected: the process dies (here: an exception) in the middle of rewriting metrics.json,
    as a SIGKILL during a heartbeat does. Sacred's own observer leaves a truncated file that
    loses every point; Toylab's keeps the previous complete file and leaves no stray file."""
    import observers

    observer = observers.AtomicFileStorageObserver(str(tmp_path))
    observer.dir = str(tmp_path)
    observer.save_json({"train.loss": {"steps": [0, 1], "values": [1.0, 0.5]}}, "metrics.json")

    def dump_half_then_die(obj, f, **kwargs):
        f.write('{"train.loss": {"steps": [0, 1, 2')
        raise KeyboardInterrupt  # stands in for the kill

    monkeypatch.setattr(json, "dump", dump_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        observer.save_json({"train.loss": {"steps": [0, 1, 2], "values": [1.0, 0.5, 0.2]}}, "metrics.json")
    monkeypatch.undo()
    assert json.loads((tmp_path / "metrics.json").read_text())["train.loss"]["steps"] == [0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_curves_drawn_in_figures_are_exactly_the_points_the_run_recorded(tmp_path):
    """harness.Curves: every point logged through it is in the run's metrics.json, with
    its prefix, and kept in memory in the same order for the figures."""
    from sacred import Experiment

    import harness
    import observers

    ex = Experiment("curves")
    ex.observers.append(observers.AtomicFileStorageObserver(str(tmp_path)))

    @ex.main
    def main(_run):
        curves = harness.Curves(_run)
        for epoch in range(5):
            curves.log(epoch, {"loss": 1.0 / (epoch + 1), "acc": epoch / 4})
            curves.log(epoch, {"agreement": epoch / 10}, prefix="stage2")
        return {name: [list(steps), list(values)] for name, (steps, values) in curves.items()}

    kept = ex.run().result
    recorded = json.loads((tmp_path / "1" / "metrics.json").read_text())
    assert sorted(kept) == sorted(recorded) == ["acc", "loss", "stage2.agreement"]
    for name, (steps, values) in kept.items():
        assert recorded[name]["steps"] == steps == list(range(5))
        assert recorded[name]["values"] == values
