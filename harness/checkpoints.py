"""Interruption and resumption: a run's training state as a ``checkpoint.pt`` artifact.

    checkpoints = harness.Checkpoints(_run, every=checkpoint_every, last_step=train_steps)
    with checkpoints.kept_on_interrupt():
        train(..., resume=harness.resume_state(_run, resume_from), on_checkpoint=checkpoints.update)

The trainer hands over its state (a dict with ``next_step``) between chunks of steps;
it is saved every ``every`` steps and, whatever stops the run (Ctrl-C, SIGTERM, an
error), once more on the way out, so an INTERRUPTED run can be continued with
``resume_from=<its id>`` in a new run.
"""
from __future__ import annotations

import contextlib
import io

from harness.artifacts import save_torch

CHECKPOINT = "checkpoint.pt"


class Checkpoints:
    def __init__(self, run, every: int, last_step: int):
        self.run, self.every, self.last_step = run, every, last_step
        self.latest = None  # the newest state the trainer handed over

    def update(self, state: dict) -> None:
        """The trainer's ``on_checkpoint``: keep the state, save it at the cadence."""
        self.latest = state
        step = state["next_step"]
        if self.every and step % self.every == 0 and step < self.last_step:
            save_torch(self.run, state, CHECKPOINT)

    @contextlib.contextmanager
    def kept_on_interrupt(self):
        """Save the newest state when the block is left by an interrupt or an error."""
        try:
            yield self
        except BaseException:
            if self.latest is not None:
                save_torch(self.run, self.latest, CHECKPOINT)
            raise


def resume_state(run, resume_from):
    """The state saved by run ``resume_from`` (a run id where runs are recorded now, or a run
    directory; None: start afresh). The link goes into this run's ``info.resumed_from``."""
    if resume_from is None:
        return None
    import torch

    import observers

    state = torch.load(io.BytesIO(observers.read_artifact(resume_from, CHECKPOINT)), weights_only=True)
    run.info["resumed_from"] = {"run": resume_from, "step": state["next_step"]}
    return state
