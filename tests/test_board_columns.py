"""The columns make board configures in Omniboard (omniboard.custom.columns), on mongomock;
the browser test (test_board.py) sees them in the runs table."""
import mongomock

from localboard import columns


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
