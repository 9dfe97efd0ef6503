"""The experiment as a user runs it: real subprocesses, real Sacred command line."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_script


def run_dirs(root):
    root = Path(root)
    return sorted(d for d in root.iterdir() if d.name.isdigit()) if root.exists() else []


def test_print_config_named_config_and_unobserved(tmp_path):
    result = run_script(["experiments/grokking.py", "print_config", "with", "paper"])
    assert result.returncode == 0, result.stderr
    assert "decoder_lr = 0.0001" in result.stdout and "train_steps = 5000" in result.stdout
    assert "fraction of the p(p+1)/2 pairs" in result.stdout  # config comments are shown
    env = {"TOYLAB_RUNS_DIR": str(tmp_path / "runs")}
    result = run_script(["experiments/grokking.py", "-u", "with", "train_steps=50"], env=env)
    assert result.returncode == 0, result.stderr
    assert not run_dirs(tmp_path / "runs")


@pytest.mark.parametrize("experiment, named", [("grokking.py", "paper"), ("grokking.py", "sacred_script"),
                                               ("grokking_transformer.py", "small")])
def test_named_config_is_documented_without_a_doc_config_entry(tmp_path, experiment, named):
    """Sacred evaluates a named config's body as module code, where its docstring sets
    ``__doc__``: every run warned 'Added new config entry: "__doc__"' and recorded the
    docstring as a config key (a column of every runs table)."""
    runs = tmp_path / "runs"
    result = run_script([f"experiments/{experiment}", "with", named, "train_steps=20"],
                        env={"TOYLAB_RUNS_DIR": str(runs)})
    assert result.returncode == 0, result.stderr
    assert "Added new config entry" not in result.stderr and "WARNING" not in result.stderr
    [run_dir] = run_dirs(runs)
    assert "__doc__" not in json.loads((run_dir / "config.json").read_text())
    # the experiment file, not the harness that constructs the Experiment, is the recorded main file
    recorded = json.loads((run_dir / "run.json").read_text())["experiment"]
    assert recorded["mainfile"] == experiment and [source for source, _ in recorded["sources"]] == [experiment]
    assert {"toylab", "torch", "sacred"} <= {dependency.split("==")[0] for dependency in recorded["dependencies"]}
    assert "__doc__" not in run_script([f"experiments/{experiment}", "print_config", "with", named]).stdout


def test_file_storage_flag_name_and_comment(tmp_path):
    env = {"TOYLAB_RUNS_DIR": str(tmp_path / "default")}
    result = run_script(["experiments/grokking.py", "-F", str(tmp_path / "elsewhere"), "-n", "my-run", "-c",
                         "a comment", "with", "p=10", "train_fraction=0.45", "train_steps=300"], env=env)
    assert result.returncode == 0, result.stderr
    assert not run_dirs(tmp_path / "default")  # -F replaces the default, it does not add to it
    [run_dir] = run_dirs(tmp_path / "elsewhere")
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    assert record["experiment"]["name"] == "my-run" and record["meta"]["comment"] == "a comment"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train_fraction"] == 0.45 and config["p"] == 10
    assert "phase" in result.stdout and str(run_dir.relative_to(tmp_path)) in result.stdout.replace(
        str(tmp_path) + "/", "")


@pytest.mark.parametrize("update, key", [
    ("p=1", "p"), ("p=-3", "p"), ("train_fraction=0", "train_fraction"), ("train_fraction=1.5", "train_fraction"),
    ("decoder_lr=-0.001", "decoder_lr"), ("encoder_lr=-1e-3", "encoder_lr"), ("loss=hinge", "loss"),
    ("train_steps=0", "train_steps"), ("optimizer=sgd", "optimizer"),
])
def test_bad_input_is_one_clear_line_and_records_nothing(tmp_path, update, key):
    env = {"TOYLAB_RUNS_DIR": str(tmp_path / "runs")}
    result = run_script(["experiments/grokking.py", "with", update], env=env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "ConfigError: " in lines[0] and f"{key}=" in lines[0] and "not allowed" in lines[0]
    assert not run_dirs(tmp_path / "runs")  # nothing recorded, so nothing left RUNNING


def test_unknown_key_is_refused_by_sacred(tmp_path):
    result = run_script(["experiments/grokking.py", "with", "decoder_lrr=1e-3"],
                        env={"TOYLAB_RUNS_DIR": str(tmp_path / "runs")})
    assert result.returncode != 0 and "decoder_lrr" in result.stderr
    assert not run_dirs(tmp_path / "runs")


def test_sigterm_records_interrupted_with_metrics_so_far(tmp_path):
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "experiments/grokking.py", "with", "train_steps=10000000",
                                "log_every=100"], cwd=REPO, env={**__import__("os").environ,
                                                                 "TOYLAB_RUNS_DIR": str(runs)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a heartbeat has stored some metrics
        metrics = runs / "1" / "metrics.json"
        if metrics.exists() and metrics.stat().st_size > 1000:
            break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("no metrics were written within 120 s")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "SIGTERM" in stderr
    record = json.loads((runs / "1" / "run.json").read_text())
    assert record["status"] == "INTERRUPTED"
    steps = json.loads((runs / "1" / "metrics.json").read_text())["train.acc"]["steps"]
    assert len(steps) > 10 and steps == sorted(steps)


def test_docker_compose_wires_omniboard_to_mongo_on_loopback_with_passwords():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mongo, board = compose["services"]["mongo"], compose["services"]["omniboard"]
    assert ":" in mongo["image"] and not mongo["image"].endswith(":latest")
    for service in (mongo, board):
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])
    assert "MONGO_ROOT_PASSWORD:?" in mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD"]
    command = " ".join(board["entrypoint"])
    assert "@mongo:27017/" in command and "authSource=admin" in command  # the compose service name
    assert " -u " in command  # Omniboard's login
    assert "mongo" in board["depends_on"]
    assert "mongo-data" in compose["volumes"] and mongo["volumes"][0].startswith("mongo-data:")
    dockerfile = (REPO / "docker" / "omniboard.Dockerfile").read_text()
    assert "omniboard@2.16.1" in dockerfile
    example = (REPO / ".env.example").read_text()
    assert "MONGO_ROOT_PASSWORD=" in example and ".env" in (REPO / ".gitignore").read_text().split()


def test_progress_bar_on_a_terminal_does_not_bloat_captured_output(tmp_path):
    """On a terminal tqdm redraws with carriage returns; the stored output keeps the last state."""
    import os
    import pty

    main_fd, terminal_fd = pty.openpty()
    process = subprocess.Popen([sys.executable, "experiments/grokking.py", "with", "train_steps=20000"], cwd=REPO,
                               env={**os.environ, "TOYLAB_RUNS_DIR": str(tmp_path / "runs")},
                               stdin=terminal_fd, stdout=terminal_fd, stderr=terminal_fd)
    os.close(terminal_fd)
    shown = b""
    while True:  # drain the terminal so the child never blocks on a full buffer
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=300) == 0
    os.close(main_fd)
    # the bar really was drawn, several times (a pty turns every \n into \r\n, so count redraws)
    assert shown.count(b"step/s") > 3
    captured = (tmp_path / "runs" / "1" / "cout.txt").read_text()
    assert "\r" not in captured and "step" in captured
    assert len(captured) < 4000


def test_flagship_run_generalises_and_says_its_split_allows_it(tmp_path):
    """make run is the paper's settings on a split whose test sums all appear in training."""
    makefile = (REPO / "Makefile").read_text()
    command = next(line.split("$(PY) ", 1)[1] for line in makefile.split("\nrun: venv\n", 1)[1].splitlines()[:1])
    result = run_script(command.split(), env={"TOYLAB_RUNS_DIR": str(tmp_path / "runs")})
    assert result.returncode == 0, result.stderr
    [run_dir] = run_dirs(tmp_path / "runs")
    outcome = json.loads((run_dir / "run.json").read_text())["result"]
    assert outcome["reachable_test_acc"] == 1.0 and outcome["final_test_acc"] >= 0.9
    assert outcome["phase"] in ("comprehension", "grokking")
    assert "every test sum appears in training" in result.stdout


def test_a_split_that_caps_test_accuracy_decides_memorization_at_t_train(tmp_path):
    """Seed 0's split leaves 2 of its 10 test sums out of training (test accuracy at most
    0.8): with stop_when_decided the run stops at the chunk after t_train, with the phase and
    t_train of the same run at its full budget, and says why it stopped."""
    results = {}
    for decided in ("True", "False"):
        runs = tmp_path / decided
        result = run_script(["experiments/grokking.py", "with", "paper", "seed=0", "decoder_lr=0.001",
                             "train_steps=3000", f"stop_when_decided={decided}"], env={"TOYLAB_RUNS_DIR": str(runs)})
        assert result.returncode == 0, result.stderr
        [run_dir] = run_dirs(runs)
        results[decided] = json.loads((run_dir / "run.json").read_text())["result"]
    stopped, full = results["True"], results["False"]
    assert full["reachable_test_acc"] == 0.8 and full["phase"] == "memorization" and full["steps"] == 3000
    assert not full["stopped_early"] and full["stop_reason"] is None
    assert stopped["phase"] == "memorization" and stopped["t_train"] == full["t_train"] is not None
    assert stopped["stopped_early"] and stopped["steps"] == 500 * -(-(full["t_train"] + 1) // 500) < 3000
    assert "caps test accuracy at 0.80 < 0.9: memorization is decided" in stopped["stop_reason"]


def test_the_package_accepts_a_range_of_torch_builds_and_the_test_setup_pins_one():
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    [torch] = [line.strip() for line in setup["options"]["install_requires"].splitlines()
               if line.strip().startswith("torch")]
    assert torch.startswith("torch>=") and "==" not in torch  # a GPU user's CUDA build satisfies it
    assert "torch==2.13.0" in (REPO / "constraints.txt").read_text().split()
    assert "-c constraints.txt" in (REPO / "Makefile").read_text()
