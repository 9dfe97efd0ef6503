"""Threshold steps and the four learning phases of Liu et al. (2022), section 5.

| phase         | rule (budget B steps, margin Delta)                        |
|---------------|------------------------------------------------------------|
| comprehension | train and test both reach the threshold, t_test - t_train < Delta |
| grokking      | both reach it, t_test - t_train >= Delta                   |
| memorization  | train reaches it, test never does within B                 |
| confusion     | train never does within B (test alone generalising without  |
|               | fitting train is counted by its gap, as the paper's code   |
|               | does with t_train = B - 1: comprehension)                  |

``TrainOutcome`` is what a trainer reports: the threshold steps it reached.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

PHASES = ("comprehension", "grokking", "memorization", "confusion")


@dataclass
class TrainOutcome:
    """What a training run reached. Threshold steps are None when never reached."""

    steps: int  # steps measured (0 .. steps-1)
    t_train: Optional[int] = None
    t_test: Optional[int] = None
    t_rqi: Optional[int] = None
    final: dict = field(default_factory=dict)  # every metric at the last measured step
    stopped_early: bool = False


def first_crossing(values, threshold: float, strict: bool = False, offset: int = 0) -> Optional[int]:
    """Index (plus ``offset``) of the first value >= threshold (> if strict), or None."""
    values = np.asarray(values)
    hits = values > threshold if strict else values >= threshold
    index = np.flatnonzero(hits)
    return int(index[0]) + offset if len(index) else None


def classify_phase(t_train: Optional[int], t_test: Optional[int], budget: int, margin: float) -> str:
    """Phase of a run from its threshold steps (None = never reached within ``budget``)."""
    if t_test is None:
        return "memorization" if t_train is not None else "confusion"
    # Unreached counts as budget - 1, the paper's convention.
    t_train = budget - 1 if t_train is None else t_train
    return "comprehension" if t_test - t_train < margin else "grokking"
