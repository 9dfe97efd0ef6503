"""The end of a run, for the person who started it: where it is recorded, and its outcome."""
from __future__ import annotations


def report(run, outcome: str) -> None:
    """Print ``run N: <where it is recorded>`` and the one-line outcome."""
    import observers

    print(f"run {run._id}: {observers.describe(run)}")
    print(outcome)
