"""How a metric series becomes MongoDB documents, and how it is read back whole.

The one place that knows the format; the live observer (observers/mongo.py), the sync of
file-storage runs (observers/sync.py) and the loader (analysis/runs.py) all go through it.

A MongoDB document holds at most 16 MiB, about 400k points of one metric (steps, values
and timestamps are three arrays). So a series is cut into documents of at most
``MAX_POINTS_PER_DOCUMENT`` points:

- document 0, the usual Sacred ``metrics`` document ``{run_id, name, steps, values,
  timestamps}``: what Omniboard and Incense read, and what the run's ``info.metrics``
  refers to;
- documents 1, 2, ... in the ``metric_chunks`` collection, ``{run_id, name, chunk,
  steps, values, timestamps}`` with ``chunk`` = k, each holding points
  ``k * MAX_POINTS_PER_DOCUMENT`` up to the next chunk.

``read_metrics`` joins them back in chunk order, so a reader sees the whole series.
``append_series`` adds points to a series already written (the sync of a run that is still
being written): they fill its last document up to the cap, then go on in new chunks.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

MAX_POINTS_PER_DOCUMENT = 250_000  # x ~44 bytes a point (3 arrays): ~11 MiB, below 16 MiB
METRICS = "metrics"  # document 0 of every metric
CHUNKS = "metric_chunks"  # documents 1, 2, ... of a metric longer than one document


def chunk_spans(n_points: int, size: int = MAX_POINTS_PER_DOCUMENT) -> list[tuple[int, int]]:
    """``(begin, end)`` of the points in document k, for k = 0, 1, ...; empty for no points."""
    if size < 1:
        raise ValueError(f"points per document must be at least 1, not {size}")
    return [(begin, min(n_points, begin + size)) for begin in range(0, n_points, size)]


def collection_name(k: int) -> str:
    """The collection that holds document k of a metric."""
    return METRICS if k == 0 else CHUNKS


def metric_document(run_id, name: str, k: int = 0, steps: Sequence = (), values: Sequence = (),
                    timestamps: Sequence = (), _id=None) -> dict:
    """Document k of metric ``name`` of run ``run_id`` (empty arrays: to be filled by ``$push``)."""
    document = {} if _id is None else {"_id": _id}
    document.update(run_id=run_id, name=name, steps=list(steps), values=list(values), timestamps=list(timestamps))
    if k:
        document["chunk"] = k
    return document


def split_series(run_id, name: str, steps: Sequence, values: Sequence, timestamps: Sequence = (),
                 size: int = MAX_POINTS_PER_DOCUMENT) -> list[tuple[str, dict]]:
    """``(collection name, document)`` for every document of one series, document 0 first.
    A series without points is one empty ``metrics`` document, as Sacred writes it."""
    spans = chunk_spans(len(steps), size) or [(0, 0)]
    return [(collection_name(k), metric_document(run_id, name, k, steps[begin:end], values[begin:end],
                                                 timestamps[begin:end]))
            for k, (begin, end) in enumerate(spans)]


def insert_series(db, run_id, name: str, steps: Sequence, values: Sequence, timestamps: Sequence = (),
                  size: int = MAX_POINTS_PER_DOCUMENT):
    """Write one whole series into ``db``; returns the ``_id`` of its ``metrics`` document
    (what ``info.metrics`` refers to). Never one document over ``size`` points."""
    first_id = None
    for collection, document in split_series(run_id, name, steps, values, timestamps, size):
        inserted = db[collection].insert_one(document).inserted_id
        first_id = inserted if first_id is None else first_id
    return first_id


def append_series(db, run_id, name: str, n_stored: int, steps: Sequence, values: Sequence,
                  timestamps: Sequence = (), size: int = MAX_POINTS_PER_DOCUMENT) -> None:
    """Append the points ``steps``/``values``/``timestamps`` to series ``name`` of run
    ``run_id``, of which ``n_stored`` points are in ``db`` already (written by
    ``insert_series`` or an earlier append with the same ``size``): the documents are then
    those ``insert_series`` writes for the whole series. ``$push``: one write per document."""
    position, begin = n_stored, 0
    while begin < len(steps):
        k, offset = divmod(position, size)
        end = begin + min(size - offset, len(steps) - begin)
        piece = {"steps": list(steps[begin:end]), "values": list(values[begin:end]),
                 "timestamps": list(timestamps[begin:end])}
        if k == 0 or offset:  # document k exists (document 0 always does): fill it
            query = {"run_id": run_id, "name": name, **({"chunk": k} if k else {})}
            db[collection_name(k)].update_one(query, {"$push": {key: {"$each": points}
                                                                for key, points in piece.items()}})
        else:
            db[CHUNKS].insert_one(metric_document(run_id, name, k, **piece))
        position, begin = position + end - begin, end


def delete_metrics(db, run_id, name: Optional[str] = None) -> None:
    """Remove every metric document of run ``run_id`` (both collections), or of its metric ``name``."""
    query = {"run_id": run_id, **({"name": name} if name is not None else {})}
    for collection in (METRICS, CHUNKS):
        db[collection].delete_many(query)


def join_documents(documents: Iterable[dict]) -> dict[str, dict]:
    """``{name: {"steps", "values", "timestamps"}}`` from the documents of one run (any
    order, any collection), each series joined in chunk order."""
    parts: dict[str, list] = {}
    for document in documents:
        parts.setdefault(document["name"], []).append(document)
    joined = {}
    for name, chunks in parts.items():
        chunks.sort(key=lambda c: c.get("chunk", 0))  # stable: equal chunks keep the order found
        joined[name] = {key: [x for chunk in chunks for x in chunk.get(key) or []]
                        for key in ("steps", "values", "timestamps")}
    return joined


def read_metrics(db, run_id, names: Optional[Iterable[str]] = None, timestamps: bool = True) -> dict[str, dict]:
    """Every metric of run ``run_id`` (or only ``names``) read whole from ``db``:
    ``{name: {"steps", "values", "timestamps"}}`` (``timestamps=False``: not fetched, empty)."""
    query: dict = {"run_id": run_id}
    if names is not None:
        query["name"] = {"$in": list(names)}
    projection = None if timestamps else {"timestamps": 0}
    return join_documents(document for collection in (METRICS, CHUNKS)
                          for document in db[collection].find(query, projection))
