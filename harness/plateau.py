"""Has a run finished learning? The plateau rule, written once and recorded in every run's info.

A headline number must come from runs that finished learning. The rule, fixed before any
result: a metric has plateaued when its best value over the whole run improved on its best
value before the last ``window`` (20%) of the measurements by less than ``tolerance``
(absolute for accuracies, 0.01; relative for errors, 1%). A run with fewer than
``MIN_MEASUREMENTS`` measurements has not shown a plateau.

    _run.info["plateau"] = harness.plateau(curves, "val.repeat_acc")             # accuracy: higher is better
    _run.info["plateau"] = harness.plateau(curves, "eval.l2", higher_is_better=False)

Analyses (``analysis.fsm.hypotheses``, ``analysis.flow_vs_regression``) read
``plateau.plateaued`` and call a comparison "not converged" when a side has not.
"""
from __future__ import annotations

import math

WINDOW = 0.2  # the last fifth of the measurements
ACCURACY_TOLERANCE = 0.01  # absolute gain of an accuracy (higher is better)
ERROR_TOLERANCE = 0.01  # relative decrease of an error (lower is better)
MIN_MEASUREMENTS = 5


def plateau(curves: dict, metric: str, higher_is_better: bool = True, tolerance: float | None = None,
            window: float = WINDOW) -> dict:
    """The plateau rule on ``curves[metric]`` (``harness.Curves``: name -> (steps, values)).
    Returns what the run's info records: the rule, the window, the gain and ``plateaued``."""
    if tolerance is None:
        tolerance = ACCURACY_TOLERANCE if higher_is_better else ERROR_TOLERANCE
    steps, values = curves.get(metric, ([], []))
    pairs = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    kind = "absolute" if higher_is_better else "relative"
    rule = (f"{metric}: best value gained less than {tolerance:g} ({kind}) over the last {window:.0%} of "
            f"the measurements")
    record = {"metric": metric, "rule": rule, "tolerance": tolerance, "window": window,
              "measurements": len(pairs), "gain": None, "window_from_step": None, "plateaued": False}
    if len(pairs) < MIN_MEASUREMENTS:
        record["rule"] += f" (needs at least {MIN_MEASUREMENTS} measurements)"
        return record
    split = min(len(pairs) - 1, max(1, int(round(len(pairs) * (1 - window)))))
    before = [v for _, v in pairs[:split]]
    everything = [v for _, v in pairs]
    if higher_is_better:
        gain = max(everything) - max(before)
    else:
        best_before = min(before)
        gain = (best_before - min(everything)) / abs(best_before) if best_before else 0.0
    record.update(gain=float(gain), window_from_step=int(pairs[split][0]), plateaued=bool(gain < tolerance))
    return record
