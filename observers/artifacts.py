"""Read an artifact of an earlier run, wherever Toylab recorded it (for ``resume_from``).

``run`` is either a run id (an int, or a string of digits) looked up where new runs are
recorded now: MongoDB when ``TOYLAB_MONGO_URL`` is set, otherwise file storage under
``TOYLAB_RUNS_DIR`` (``./runs``); or a path to a run directory (e.g. a fallback run,
``runs/fallback/3``).
"""
from __future__ import annotations

from pathlib import Path


def read_artifact(run, name: str) -> bytes:
    """The bytes of artifact ``name`` of ``run``; FileNotFoundError naming what is missing."""
    import observers

    if isinstance(run, str) and not run.isdigit():
        path = Path(run) / name
        if not path.is_file():
            raise FileNotFoundError(f"no artifact {name} in run directory {run}")
        return path.read_bytes()
    run_id = int(run)
    mongo = observers.mongo_settings()
    if mongo is None:
        path = observers.runs_dir() / str(run_id) / name
        if not path.is_file():
            raise FileNotFoundError(f"no artifact {name} for run {run_id} in file storage {observers.runs_dir()}")
        return path.read_bytes()
    import gridfs
    import pymongo

    url, db_name = mongo
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        db = client[db_name]
        doc = db.runs.find_one({"_id": run_id}, {"artifacts": 1})
        for artifact in (doc or {}).get("artifacts", []):
            if artifact["name"] == name:
                return gridfs.GridFS(db).get(artifact["file_id"]).read()
    raise FileNotFoundError(f"no artifact {name} for run {run_id} in MongoDB database {db_name}")
