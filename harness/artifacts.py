"""Files a run keeps (figures, models, tables): written to a private temporary directory,
then added as run artifacts, so overlapping runs never collide on a path and nothing is
left behind. Figures are PNG, which Omniboard shows."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path


def save_file(run, name: str, write) -> None:
    """Add artifact ``name`` to ``run``; ``write(path)`` writes its content."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        write(path)
        run.add_artifact(str(path), name)


def save_figure(run, figure, name: str) -> None:
    """A matplotlib figure as a PNG artifact (closed afterwards)."""
    import matplotlib.pyplot as plt

    def write(path):
        figure.savefig(path)
        plt.close(figure)

    save_file(run, name, write)


def save_torch(run, obj, name: str) -> None:
    """A ``torch.save``-able object (a state dict, a checkpoint) as an artifact."""
    import torch

    save_file(run, name, lambda path: torch.save(obj, path))


def save_text(run, text: str, name: str) -> None:
    save_file(run, name, lambda path: path.write_text(text))


def save_json(run, obj, name: str) -> None:
    save_file(run, name, lambda path: path.write_text(json.dumps(obj, indent=2, sort_keys=True)))
