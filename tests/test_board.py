"""`make board` end to end, and Omniboard in a real browser (Playwright driving Debian's Chromium).

A directory with one finished grokking run in file storage; `make board` sets up the local
server and Omniboard on free ports with a state directory of its own (credentials generated
there), syncs the run, and the browser logs in and finds it.
"""
import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from localboard.processes import free_port, port_open
from localboard.processes import listening_addresses
from tests.conftest import REPO, require_board, run_script

OUTPUT = REPO / "test-output"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


UNSET = ("TOYLAB_BOARD_USER", "TOYLAB_BOARD_PASSWORD", "TOYLAB_MONGO_URL")  # credentials get generated


def make(target: str, env: dict) -> subprocess.CompletedProcess:
    full_env = {name: value for name, value in os.environ.items() if name not in UNSET}
    return subprocess.run(["make", "-s", target], cwd=REPO, env={**full_env, **env}, capture_output=True,
                          text=True, timeout=300)


def own_board_env(tmp) -> dict:
    """A board of its own under ``tmp``: runs, state and two free ports."""
    return {"TOYLAB_RUNS_DIR": str(tmp / "runs"), "TOYLAB_BOARD_STATE": str(tmp / "state"),
            "TOYLAB_BOARD_PORT": str(free_port()), "TOYLAB_BOARD_MONGO_PORT": str(free_port())}


def require_chromium() -> None:
    """Browser tests need Debian's chromium: skipped without it, failed without it in CI."""
    if not Path(CHROMIUM).exists():
        message = f"the browser test needs Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def stored_login(state) -> tuple[str, str]:
    """The user and password `make board` generated into its state directory."""
    stored = json.loads((Path(state) / "credentials").read_text())
    return stored["user"], stored["password"]


@contextmanager
def logged_in_page(user: str, password: str, viewport: dict = None):
    """Debian's Chromium with a page logged in to the board (HTTP basic auth): yields
    (browser, page), the browser for other contexts (a stranger's); closed on exit."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=viewport or {"width": 1400, "height": 900},
                                          http_credentials={"username": user, "password": password})
            yield browser, context.new_page()
        finally:
            browser.close()


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    require_board("make board")
    tmp = tmp_path_factory.mktemp("board")
    env = own_board_env(tmp)
    run = run_script(["experiments/grokking.py", "with", "train_steps=300", "log_every=3"], env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    started = make("board", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        user, password = stored_login(tmp / "state")
        yield {"env": env, "out": started.stdout, "state": tmp / "state", "user": user,
               "password": password, "url": f"http://127.0.0.1:{env['TOYLAB_BOARD_PORT']}/sacred"}
    finally:
        stopped = make("board-stop", env)
        assert stopped.returncode == 0, stopped.stderr
        assert not port_open(int(env["TOYLAB_BOARD_PORT"])) and not port_open(int(env["TOYLAB_BOARD_MONGO_PORT"]))


def pids(board) -> dict:
    return {name: int((board["state"] / f"{name}.pid").read_text()) for name in ("server", "omniboard")}


def test_make_board_prints_url_and_login_keeps_password_private_and_is_idempotent(board):
    assert "sync: 1 uploaded" in board["out"] and board["url"] in board["out"]
    assert f"log in as {board['user']}" in board["out"] and board["password"] not in board["out"]
    assert (board["state"] / "credentials").stat().st_mode & 0o777 == 0o600
    before = pids(board)
    again = make("board", board["env"])
    assert again.returncode == 0, again.stderr
    assert "sync: 0 uploaded, 1 already in MongoDB" in again.stdout
    assert pids(board) == before  # reused, not restarted
    for pid in before.values():  # the password is on no command line
        assert board["password"].encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".board/credentials"], cwd=REPO)
    assert ignored.returncode == 0


def test_server_and_omniboard_listen_on_loopback_only(board):
    ports = {"server": int(board["env"]["TOYLAB_BOARD_MONGO_PORT"]), "omniboard": int(board["env"]["TOYLAB_BOARD_PORT"])}
    for name, pid in pids(board).items():
        addresses = listening_addresses(pid)
        assert ("127.0.0.1", ports[name]) in addresses, name
        assert {ip for ip, _ in addresses} == {"127.0.0.1"}, (name, addresses)


def test_api_refuses_without_login(board):
    api = board["url"] + "/api/v1/Runs"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(api, timeout=10)
    assert refused.value.code == 401
    token = base64.b64encode(f"{board['user']}:{board['password']}".encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(api, headers={"Authorization": f"Basic {token}"}),
                                timeout=10) as response:
        runs = json.loads(response.read())
    assert [run["status"] for run in runs] == ["COMPLETED"]


def test_browser_sees_the_run_its_metrics_plot_and_artifacts(board):
    from playwright.sync_api import Error as PlaywrightError, expect

    with logged_in_page(board["user"], board["password"], {"width": 1400, "height": 1000}) as (browser, page):
        stranger = browser.new_context()  # no login: the browser gets no page, only a 401
        with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
            stranger.new_page().goto(board["url"])
        assert stranger.request.get(board["url"]).status == 401
        stranger.close()

        page.goto(board["url"])
        row = page.get_by_role("row").filter(has_text="grokking")
        expect(row).to_have_count(1, timeout=60_000)  # the page says "Loading..." until its API calls return
        expect(row).to_contain_text("COMPLETED")
        # the board's own columns: the run's results (Omniboard by itself shows config keys but no
        # result), at the right end of the table, which draws only the columns in view
        result = json.loads((Path(board["env"]["TOYLAB_RUNS_DIR"]) / "1" / "run.json").read_text())["result"]
        page.mouse.move(700, 400)
        for _ in range(30):
            page.mouse.wheel(3000, 0)
        for column in ("Phase", "T Train", "Steps"):
            expect(page.get_by_role("columnheader").filter(has_text=column).first).to_be_visible(timeout=30_000)
        expect(page.get_by_role("row").filter(has_text=result["phase"])).to_have_count(1)
        page.screenshot(path=str(OUTPUT / "board-result-columns.png"))
        for _ in range(30):
            page.mouse.wheel(-3000, 0)

        row.get_by_text("grokking", exact=True).click()
        expect(page.get_by_text("Details for:")).to_be_visible(timeout=30_000)
        legend = page.locator(".legendtext", has_text="test.acc")  # plotly's legend of the metrics plot
        expect(legend).to_be_visible(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "board-metrics-plot.png"))

        page.get_by_text("Artifacts", exact=True).click()
        for name in ("training_curves.png", "representation.png"):
            expect(page.get_by_text(name).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(OUTPUT / "board-artifacts.png"))
