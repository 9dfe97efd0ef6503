"""What every Toylab experiment uses that is not its method, written once.

An experiment file reads like the paper's method section: docstring, config, named
configs, builders, ``main``. Everything else it needs comes from here:

    ex = harness.experiment("grokking")                  # a Sacred Experiment recorded by observers/
    ex.config_hook(harness.checks(                       # declarative checks, one-line errors
        harness.choice({"loss": ("mse", "cross_entropy")}),
        harness.integer({"p": 2, "train_steps": 1}),
        harness.positive("decoder_lr")))
    curves = harness.Curves(_run)                        # log metrics, keep them for the figures
    harness.save_figure(_run, fig, "training_curves.png")
    harness.save_torch(_run, model.state_dict(), "model.pt")
    checkpoints = harness.Checkpoints(_run, every=5000, last_step=train_steps)
    harness.report(_run, "phase grokking: ...")          # where the run is recorded, and its outcome
    _run.info["plateau"] = harness.plateau(curves, "val.acc")  # did it finish learning (harness/plateau.py)

Named configs keep their docstrings as documentation (``print_config``, the source)
without adding a ``__doc__`` key to every run's config.
"""
import warnings

# Sacred imports pkg_resources, which warns on every start; nothing a user can act on.
# Filtered here, before anything imports Sacred, so no experiment depends on its import order.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from harness.artifacts import save_figure, save_file, save_json, save_text, save_torch  # noqa: E402
from harness.checkpoints import Checkpoints, resume_state  # noqa: E402
from harness.checks import (ConfigError, boolean, checks, choice, cuda_available, divides, integer,  # noqa: E402
                            integer_list, multiple_of, non_negative, positive, refuse, rule, within)
from harness.curves import Curves  # noqa: E402
from harness.experiment import experiment, on_terminal  # noqa: E402
from harness.plateau import plateau  # noqa: E402
from harness.report import report  # noqa: E402

__all__ = ["experiment", "on_terminal", "checks", "ConfigError", "refuse", "choice", "integer", "integer_list",
           "boolean", "positive", "non_negative", "within", "multiple_of", "divides", "cuda_available", "rule",
           "Curves", "save_figure", "save_torch", "save_file", "save_text", "save_json", "Checkpoints", "resume_state",
           "report", "plateau"]
