"""The columns make board configures in Omniboard (omniboard.custom.columns): which ones, on
mongomock; and where Omniboard puts them, in a real browser (Playwright driving Debian's
Chromium) on a two-run sweep.

Omniboard 2.16.1 decides the order and the visibility of the runs table's columns in the
browser only (board/node_modules/omniboard/web/src/components/RunsTable/runsTable.js): at the
first load it makes a column of every key of the runs it fetched, custom columns appended
after the run's own fields and config keys (``_parseRunsResponseData``), moves a few of its
own to the front (``loadData``: the ``reorderArray`` calls), shows them all
(``createDropdownOption(key, selected = true)``) and from then on keeps the order, widths and
hidden columns in the browser's localStorage (the ``react-localstorage`` mixin, key
``<db>|RunsTable|1``). The database's ``omniboard.settings`` holds only the timezone, the
refresh interval, the fetch size and the row height. So the board's columns are at the right
end, and the browser test pins that order, as a user sees it, from the header cells'
positions.
"""
import json
from pathlib import Path

import mongomock
import pytest

from localboard import columns
from localboard.processes import port_open
from tests.conftest import require_board, run_script
from tests.test_board import OUTPUT, logged_in_page, make, own_board_env, require_chromium, stored_login


def run(config, result):
    return {"config": config, "result": result}


def test_varying_config_keys_then_results_and_a_users_columns_are_kept():
    db = mongomock.MongoClient()["sacred"]
    db.runs.insert_many([
        run({"decoder_lr": 1e-3, "seed": 0, "p": 10, "dataset": {"num_train": 20}, "sizes": [1, 2]},
            {"phase": "grokking", "t_train": 5, "curve": [1, 2]}),
        run({"decoder_lr": 1e-2, "seed": 1, "p": 10, "dataset": {"num_train": 20}, "sizes": [3]},
            {"phase": "memorization", "t_train": 7}),
        run({"decoder_lr": 1e-4, "seed": 1, "p": 10, "dataset": {"num_train": 50}, "sizes": [3]}, None),
    ])
    db[columns.COLLECTION].insert_one({"name": "seed", "config_path": "config.seed"})  # a user's own column
    names = columns.configure(db)
    # decoder_lr varies most (3 values), dataset.num_train and seed twice; p never; lists are not columns
    assert names == ["decoder_lr", "dataset.num_train", "phase", "t_train"]
    stored = {doc["name"]: doc for doc in db[columns.COLLECTION].find({})}
    assert stored["dataset.num_train"]["config_path"] == "config.dataset.num_train"
    assert stored["phase"]["config_path"] == "result.phase" and stored["phase"]["toylab"] is True
    assert "toylab" not in stored["seed"]  # the user's column stays as it was
    assert columns.configure(db) == names  # refreshed, not duplicated
    assert db[columns.COLLECTION].count_documents({}) == len(names) + 1


# ------------------------------------------------------------------ in a real browser
# Omniboard's own columns, first, in this order: runsTable.js loadData moves experiment_name
# and hostname behind _id, tags and notes behind status
OMNIBOARD_FIRST = ["_id", "experiment_name", "hostname", "format", "command", "start_time", "status", "tags", "notes"]
SETTINGS = {"timezone", "auto_refresh_interval", "initial_fetch_size", "row_height"}  # App/index.js _fetchData
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def sweep_board(tmp_path_factory):
    """`make board` on a sweep of two short grokking runs that differ in decoder_lr."""
    require_board("make board")
    tmp = tmp_path_factory.mktemp("board-columns")
    env = own_board_env(tmp)
    for lr in ("1e-3", "1e-2"):
        done = run_script(["experiments/grokking.py", "with", "train_steps=300", "log_every=3", f"decoder_lr={lr}"],
                          env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    started = make("board", env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        user, password = stored_login(tmp / "state")
        yield {"env": env, "runs": tmp / "runs", "user": user, "password": password,
               "url": f"http://127.0.0.1:{env['TOYLAB_BOARD_PORT']}/sacred"}
    finally:
        stopped = make("board-stop", env)
        assert stopped.returncode == 0, stopped.stderr
        assert not port_open(int(env["TOYLAB_BOARD_PORT"])) and not port_open(int(env["TOYLAB_BOARD_MONGO_PORT"]))


HEADERS = """() => [...document.querySelectorAll('[test-attr^="header-sort-"]')]
  .filter(link => !link.getAttribute('test-attr').startsWith('header-sort-close-'))
  .map(link => ({key: link.getAttribute('test-attr').slice('header-sort-'.length),
                 x: link.getBoundingClientRect().left,
                 right: (link.closest('.fixedDataTableCellLayout_main') || link).getBoundingClientRect().right}))"""


def visible_headers(page) -> list[str]:
    """The column keys of the header cells in view, left to right by the position of their
    label (HeaderCell marks each ``test-attr="header-sort-KEY"``). The table draws only the
    columns in view, and the ones scrolled under the fixed Id column on its left are not."""
    cells = page.evaluate(HEADERS)
    fixed = [cell for cell in cells if cell["key"] == "_id"]
    assert len(fixed) == 1, cells
    shown = [cell for cell in cells if cell["key"] != "_id" and fixed[0]["right"] <= cell["x"] < VIEWPORT["width"]]
    xs = [cell["x"] for cell in shown]
    assert len(set(xs)) == len(xs), cells  # no two labels on one spot
    return ["_id"] + [cell["key"] for cell in sorted(shown, key=lambda cell: cell["x"])]


def header_order(page, shots: dict) -> list[str]:
    """Every column of the runs table, left to right, as the browser lays out the header cells:
    scrolled right a part of a screen at a time, each view overlapping the one before; where a
    column of ``shots`` first comes into view, a screenshot."""
    page.mouse.move(VIEWPORT["width"] // 2, VIEWPORT["height"] - 200)  # over the table's body
    order: list[str] = []
    unchanged = 0
    while unchanged < 3:
        view = visible_headers(page)
        known = [key for key in view if key in order]
        assert known or not order, (view, order)  # overlaps the view before (the fixed Id column at least)
        assert known == [key for key in order if key in known], (view, order)  # same relative order
        assert view[:len(known)] == known, (view, order)  # what is new is right of what was seen
        new = view[len(known):]
        order += new
        for key in new:
            if key in shots:
                page.screenshot(path=str(shots[key]))
        unchanged = 0 if new else unchanged + 1
        page.mouse.wheel(VIEWPORT["width"] // 2, 0)
        page.wait_for_timeout(300)
    return order


def test_browser_shows_omniboards_columns_first_and_the_boards_at_the_right_end(sweep_board):
    require_chromium()
    from playwright.sync_api import expect

    from localboard.server import DB_NAME, mongo_url
    from observers.sync import connect

    runs = [json.loads(path.read_text()) for path in sorted(sweep_board["runs"].glob("[0-9]*/run.json"))]
    configs = [json.loads((Path(path).parent / "config.json").read_text())
               for path in sorted(sweep_board["runs"].glob("[0-9]*/run.json"))]
    ours = [column["name"] for column in columns.columns(
        [{"config": config, "result": run["result"]} for config, run in zip(configs, runs)])]
    assert ours[0] == "decoder_lr" and {"phase", "t_train", "t_test", "final_test_acc"} <= set(ours)

    with logged_in_page(sweep_board["user"], sweep_board["password"], VIEWPORT) as (_, page):
        page.goto(sweep_board["url"])
        expect(page.get_by_role("row").filter(has_text="grokking")).to_have_count(2, timeout=60_000)
        page.screenshot(path=str(OUTPUT / "board-columns-opening.png"))  # what the table opens with
        order = header_order(page, {ours[0]: OUTPUT / "board-columns-board-columns.png"})
        stored = json.loads(page.evaluate("() => localStorage.getItem('default|RunsTable|1')"))

    assert order[:len(OMNIBOARD_FIRST)] == OMNIBOARD_FIRST
    assert order[-len(ours):] == ours  # the board's columns: the right end, in the board's order
    between = order[len(OMNIBOARD_FIRST):-len(ours)]
    # between them the run's other fields and every config key (Omniboard's c_ prefix), the varying ones too
    assert {key for key in between if not key.startswith("c_")} <= set(runs[0]) | {"duration"}, between
    assert {f"c_{key}" for key in configs[0]} <= set(between)
    # the order is the browser's: the one kept in its localStorage, every column shown
    assert stored["columnOrder"] == order
    assert [option["value"] for option in stored["dropdownOptions"]] == order
    assert all(option["selected"] for option in stored["dropdownOptions"])
    # and nothing of it in the database: Omniboard's settings there are these four only
    url = mongo_url(int(sweep_board["env"]["TOYLAB_BOARD_MONGO_PORT"]), sweep_board["user"], sweep_board["password"])
    client, db = connect(url, DB_NAME)
    try:
        assert {doc["name"] for doc in db["omniboard.settings"].find({}, {"name": 1})} == SETTINGS
    finally:
        client.close()
