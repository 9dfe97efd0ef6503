"""Has a run finished learning? The plateau rule, written once and recorded in every run's info.

A headline number must come from runs that finished learning. The rule, fixed before any
result: a metric has plateaued when its best value over the whole run improved on its best
value before the last ``window`` (20%) of the measurements by less than ``tolerance``
(absolute for accuracies, 0.01; relative for errors, 1%). An error may also name its
``scale``, the error of a trivial predictor (predicting the mean): a gain below 1% of it
counts as a plateau too, so an error already a thousand times below the task's scale that
still halves is finished for every comparison (1% of the scale, as 0.01 is of an
accuracy's). A run with fewer than ``MIN_MEASUREMENTS`` measurements has not shown a plateau.

    _run.info["plateau"] = harness.plateau(curves, "val.repeat_acc")             # accuracy: higher is better
    _run.info["plateau"] = harness.plateau(curves, "eval.l2", higher_is_better=False, scale=baseline_mse)

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
            window: float = WINDOW, scale: float | None = None) -> dict:
    """The plateau rule on ``curves[metric]`` (``harness.Curves``: name -> (steps, values)).
    ``scale`` (errors only): the trivial predictor's error; a gain below ``tolerance`` times
    it also counts. Returns what the run's info records: the rule, the window, the gain and
    ``plateaued``."""
    if scale is not None and higher_is_better:
        raise ValueError("scale is for errors (higher_is_better=False): an accuracy's scale is 1")
    if tolerance is None:
        tolerance = ACCURACY_TOLERANCE if higher_is_better else ERROR_TOLERANCE
    steps, values = curves.get(metric, ([], []))
    pairs = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    kind = "absolute" if higher_is_better else "relative"
    if scale is not None:
        kind += f", or less than {tolerance * scale:.3g} absolute ({tolerance:g} of the scale {scale:.3g})"
    rule = (f"{metric}: best value gained less than {tolerance:g} ({kind}) over the last {window:.0%} of "
            f"the measurements")
    record = {"metric": metric, "rule": rule, "tolerance": tolerance, "window": window, "scale": scale,
              "measurements": len(pairs), "gain": None, "window_from_step": None, "plateaued": False}
    if len(pairs) < MIN_MEASUREMENTS:
        record["rule"] += f" (needs at least {MIN_MEASUREMENTS} measurements)"
        return record
    split = min(len(pairs) - 1, max(1, int(round(len(pairs) * (1 - window)))))
    before = [v for _, v in pairs[:split]]
    everything = [v for _, v in pairs]
    if higher_is_better:
        gain = max(everything) - max(before)
        plateaued = gain < tolerance
    else:
        best_before = min(before)
        absolute_gain = best_before - min(everything)
        gain = absolute_gain / abs(best_before) if best_before else 0.0
        plateaued = gain < tolerance or (scale is not None and absolute_gain < tolerance * scale)
    record.update(gain=float(gain), window_from_step=int(pairs[split][0]), plateaued=bool(plateaued))
    return record
