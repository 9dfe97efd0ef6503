"""`make board` when things go wrong: the server killed with SIGKILL mid-write, a hung
Omniboard, two `make board` at the same moment, bad command lines and ports.

Real commands (`make board`, `python -m localboard`), real processes, a real browser
(Playwright driving Debian's Chromium, as tests/test_board.py does). Each test has a board
of its own: a state directory, two free ports and a runs directory (where the server's
SQLite file lives) holding a copy of one finished grokking run in file storage.
"""
import base64
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from localboard.processes import listening_ports, port_open
from tests.conftest import REPO, require_board, run_script
from tests.test_board import OUTPUT, UNSET, logged_in_page, make, own_board_env, stored_login


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    require_board("make board")
    runs = tmp_path_factory.mktemp("recovery") / "runs"
    run = run_script(["experiments/grokking.py", "with", "train_steps=300", "log_every=3"],
                     env={"TOYLAB_RUNS_DIR": str(runs)})
    assert run.returncode == 0, run.stderr[-2000:]
    return runs


@pytest.fixture
def board_env(one_run, tmp_path):
    """The environment of one board (not started); stopped afterwards, whatever the test did."""
    shutil.copytree(one_run, tmp_path / "runs")
    env = own_board_env(tmp_path)
    yield env
    for pids in board_processes(env).values():  # a stopped (SIGSTOP) process must go too
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    stopped = make("board-stop", env)
    assert stopped.returncode == 0, stopped.stderr
    assert not board_processes(env)["server"] and not board_processes(env)["omniboard"]


def board_processes(env: dict) -> dict:
    """The pids of every server and Omniboard process of this board (found by the
    TOYLAB_BOARD_STATE in their environment, not by the pid files make board writes)."""
    mine = f"TOYLAB_BOARD_STATE={env['TOYLAB_BOARD_STATE']}".encode()
    found = {"server": [], "omniboard": []}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if mine not in environ:
            continue
        if b"board/server.py" in cmdline:
            found["server"].append(int(proc.name))
        elif b"omniboard/dist/start.js" in cmdline:
            found["omniboard"].append(int(proc.name))
    return found


def api_runs(env: dict, timeout: float = 10):
    """(HTTP status, body) of Omniboard's runs API with the login; (None, error) if no answer."""
    user, password = stored_login(env["TOYLAB_BOARD_STATE"])
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(f"http://127.0.0.1:{env['TOYLAB_BOARD_PORT']}/sacred/api/v1/Runs",
                                     headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except OSError as error:
        return None, str(error)


def pid_of(env: dict, name: str) -> int:
    return int((Path(env["TOYLAB_BOARD_STATE"]) / f"{name}.pid").read_text())


def mongo_client(env: dict, **options):
    import pymongo

    from localboard.server import mongo_url

    user, password = stored_login(env["TOYLAB_BOARD_STATE"])
    return pymongo.MongoClient(mongo_url(int(env["TOYLAB_BOARD_MONGO_PORT"]), user, password), **options)


def integrity(sqlite_file: Path, scratch: Path) -> str:
    """PRAGMA integrity_check of a copy of the database as it is on disk (file + WAL + shm),
    so the check itself changes nothing."""
    scratch.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{sqlite_file}{suffix}").exists():
            shutil.copyfile(f"{sqlite_file}{suffix}", scratch / f"copy.sqlite3{suffix}")
    with sqlite3.connect(scratch / "copy.sqlite3") as db:
        return "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))


def browser_shows_the_run(env: dict, screenshot: str) -> None:
    """Log in to Omniboard in Chromium and find the grokking run's row (screenshot as evidence)."""
    from playwright.sync_api import expect

    with logged_in_page(*stored_login(env["TOYLAB_BOARD_STATE"])) as (_, page):
        page.goto(f"http://127.0.0.1:{env['TOYLAB_BOARD_PORT']}/sacred")
        row = page.get_by_role("row").filter(has_text="grokking")
        try:
            expect(row).to_have_count(1, timeout=30_000)
            expect(row).to_contain_text("COMPLETED")
        finally:
            page.screenshot(path=str(OUTPUT / screenshot))


def test_server_sigkilled_mid_write_then_make_board_keeps_the_data_and_the_browser_shows_the_runs(board_env, tmp_path):
    first = make("board", board_env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "sync: 1 uploaded" in first.stdout
    server, omniboard = pid_of(board_env, "server"), pid_of(board_env, "omniboard")

    # a client writing acknowledged documents when the server is killed
    acknowledged, stop = [], threading.Event()

    def write():
        client = mongo_client(board_env, serverSelectionTimeoutMS=2000, socketTimeoutMS=2000)
        probe = client["durability"]["probe"]
        try:
            while not stop.is_set():
                probe.insert_one({"_id": len(acknowledged), "payload": "x" * 20_000})
                acknowledged.append(len(acknowledged))
        except Exception:  # the server is gone
            pass
        finally:
            client.close()

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 50 and time.monotonic() < deadline and writer.is_alive():
        time.sleep(0.01)
    os.kill(server, signal.SIGKILL)  # mid-write: the writer is still inserting
    writer_was_writing = writer.is_alive()
    writer.join(30)
    stop.set()
    assert writer_was_writing and len(acknowledged) >= 50

    data = Path(board_env["TOYLAB_RUNS_DIR"]) / "board" / "mongo.sqlite3"
    assert integrity(data, tmp_path / "after-kill") == "ok"

    # what the issue saw: Omniboard's pool gives up on the dead server ("pool is draining")
    # after ~30 s, and never recovers on its own
    deadline, status = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        status, body = api_runs(board_env, timeout=5)
        if status == 500:
            break
        time.sleep(0.5)
    assert status == 500 and "pool" in body, (status, body)

    again = make("board", board_env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "sync: 0 uploaded, 1 already in MongoDB" in again.stdout  # the run survived: nothing to upload
    status, runs = api_runs(board_env)  # Omniboard works again
    assert status == 200 and [run["status"] for run in runs] == ["COMPLETED"], (status, runs)
    browser_shows_the_run(board_env, "board-after-server-sigkill.png")
    assert pid_of(board_env, "server") != server and pid_of(board_env, "omniboard") != omniboard
    assert {name: len(pids) for name, pids in board_processes(board_env).items()} == {"server": 1, "omniboard": 1}

    client = mongo_client(board_env, serverSelectionTimeoutMS=10_000)
    try:  # every write the server acknowledged before its death is there
        stored = set(client["durability"]["probe"].distinct("_id"))
    finally:
        client.close()
    assert set(acknowledged) <= stored
    assert integrity(data, tmp_path / "after-restart") == "ok"


def test_a_hung_omniboard_is_restarted_by_make_board(board_env):
    first = make("board", board_env)
    assert first.returncode == 0, first.stdout + first.stderr
    server, omniboard = pid_of(board_env, "server"), pid_of(board_env, "omniboard")
    os.kill(omniboard, signal.SIGSTOP)  # its port stays open, its API answers nothing
    assert api_runs(board_env, timeout=2)[0] is None

    again = make("board", board_env)
    assert again.returncode == 0, again.stdout + again.stderr
    status, runs = api_runs(board_env)
    assert status == 200 and [run["status"] for run in runs] == ["COMPLETED"], (status, runs)
    assert pid_of(board_env, "server") == server  # the healthy server is kept
    assert board_processes(board_env)["omniboard"] == [pid_of(board_env, "omniboard")] != [omniboard]


def test_two_make_board_at_the_same_moment_start_one_board(board_env):
    env = {**{k: v for k, v in os.environ.items() if k not in UNSET}, **board_env}
    both = [subprocess.Popen(["make", "-s", "board"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [process.communicate(timeout=300) for process in both]
    assert [process.returncode for process in both] == [0, 0], outs

    urls = [[line for line in out.splitlines() if line.startswith("Omniboard: ")] for out, _ in outs]
    assert urls[0] == urls[1] and f"http://127.0.0.1:{board_env['TOYLAB_BOARD_PORT']}/sacred" in urls[0][0]
    syncs = sorted(line for out, _ in outs for line in out.splitlines() if line.startswith("sync:"))
    assert syncs == ["sync: 0 uploaded, 1 already in MongoDB", "sync: 1 uploaded, 0 already in MongoDB"]

    running = board_processes(board_env)
    assert running == {"server": [pid_of(board_env, "server")], "omniboard": [pid_of(board_env, "omniboard")]}
    assert listening_ports(running["server"][0]) == {int(board_env["TOYLAB_BOARD_MONGO_PORT"])}
    assert listening_ports(running["omniboard"][0]) == {int(board_env["TOYLAB_BOARD_PORT"])}
    status, runs = api_runs(board_env)
    assert status == 200 and len(runs) == 1, (status, runs)


def localboard(args: list, env: dict) -> subprocess.CompletedProcess:
    full_env = {**{k: v for k, v in os.environ.items() if k not in UNSET}, **env}
    return subprocess.run([sys.executable, "-m", "localboard", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["frobnicate"], [], ["start", "now"]])
def test_unknown_command_is_one_line_naming_it_and_the_allowed_ones(args, board_env):
    result = localboard(args, board_env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert ("no command given" if not args else repr(" ".join(args))) in lines[0]
    assert "start" in lines[0] and "stop" in lines[0]
    assert not Path(board_env["TOYLAB_BOARD_STATE"]).exists()


@pytest.mark.parametrize("variable, value, says", [
    ("TOYLAB_BOARD_PORT", "abc", "TOYLAB_BOARD_PORT='abc' is not a TCP port: set it to a number from 1 to 65535"),
    ("TOYLAB_BOARD_MONGO_PORT", "70000", "TOYLAB_BOARD_MONGO_PORT='70000' is not a TCP port"),
    ("TOYLAB_BOARD_MONGO_PORT", "-1", "TOYLAB_BOARD_MONGO_PORT='-1' is not a TCP port"),
    ("TOYLAB_BOARD_PORT", "same", "are both"),
    ("TOYLAB_BOARD_PORT", "in use",
     "(TOYLAB_BOARD_PORT) is in use by another program: set TOYLAB_BOARD_PORT to a free port"),
    ("TOYLAB_BOARD_MONGO_PORT", "in use",
     "(TOYLAB_BOARD_MONGO_PORT) is in use by another program: set TOYLAB_BOARD_MONGO_PORT to a free port"),
])
def test_bad_port_is_one_line_and_nothing_is_left_running_or_written(variable, value, says, board_env):
    env = dict(board_env)
    with socket.socket() as other_program:
        if value == "in use":
            other_program.bind(("127.0.0.1", 0))
            other_program.listen()
            env[variable] = str(other_program.getsockname()[1])
        elif value == "same":
            env["TOYLAB_BOARD_PORT"] = env["TOYLAB_BOARD_MONGO_PORT"]
        else:
            env[variable] = value
        result = localboard(["start"], env)
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert board_processes(env) == {"server": [], "omniboard": []}
    other = "TOYLAB_BOARD_MONGO_PORT" if variable == "TOYLAB_BOARD_PORT" else "TOYLAB_BOARD_PORT"
    assert not port_open(int(env[other]))
    state = Path(env["TOYLAB_BOARD_STATE"])
    assert not state.exists() or {p.name for p in state.iterdir()} == {"lock"}  # no credentials, pid or log file
    assert not (Path(env["TOYLAB_RUNS_DIR"]) / "board").exists()  # no database
