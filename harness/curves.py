"""Metrics logged to a run and kept for its figures."""
from __future__ import annotations


class Curves(dict):
    """Metrics logged to a run and kept in memory as ``{name: (steps, values)}``, so the
    run's figures draw exactly the points the run recorded (curves belong in metrics, not
    in ``_run.info``)."""

    def __init__(self, run):
        super().__init__()
        self._run = run

    def log(self, step: int, metrics: dict, prefix: str = "") -> None:
        """Log each ``name: value`` at ``step`` (as ``prefix.name`` when a prefix is given)."""
        for name, value in metrics.items():
            name = f"{prefix}.{name}" if prefix else name
            self._run.log_scalar(name, value, step)
            steps, values = self.setdefault(name, ([], []))
            steps.append(step)
            values.append(value)
