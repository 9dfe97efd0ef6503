"""The Sacred Experiment every Toylab experiment file starts from."""
from __future__ import annotations

import inspect
import os
import sys

import sacred
from sacred.config import ConfigScope
from sacred.dependencies import gather_sources_and_dependencies

# Read once, at import: during a run Sacred's output capture points stderr at a pipe, so
# tqdm's own check would hide every progress bar.
_STDERR_IS_TERMINAL = sys.stderr.isatty()


def on_terminal() -> bool:
    """Whether the experiment was started on a terminal: then progress bars are drawn
    (the captured output keeps only their last state); elsewhere they stay quiet."""
    return _STDERR_IS_TERMINAL


class _DocumentedConfigScope(ConfigScope):
    """A named config whose docstring documents it and is not a config entry.

    Sacred evaluates a config function's body as module code, where a leading string sets
    ``__doc__``: every run of ``with paper`` then warned 'Added new config entry: "__doc__"'
    and carried the docstring as a config key."""

    def __call__(self, *args, **kwargs):
        summary = super().__call__(*args, **kwargs)
        summary.pop("__doc__", None)
        summary.added.discard("__doc__")
        return summary


class Experiment(sacred.Experiment):
    def named_config(self, func):
        scope = _DocumentedConfigScope(func)
        self._add_named_config(func.__name__, scope)
        return scope


def experiment(name: str) -> Experiment:
    """An experiment named ``name``, recorded where observers/ says (file storage by
    default, MongoDB when configured), with SIGTERM and Ctrl-C ending a run INTERRUPTED."""
    import observers

    ex = Experiment(name)
    # Sacred takes the main file, its sources, the package dependencies and the --help text
    # from the globals of the frame that constructs the Experiment: that is this function, so
    # they are taken again from the experiment file that called it.
    caller = inspect.stack()[1][0].f_globals
    ex.base_dir = os.path.abspath(os.path.dirname(caller.get("__file__", ".")))
    ex.doc = caller.get("__doc__", "")
    ex.mainfile, ex.sources, ex.dependencies = gather_sources_and_dependencies(caller, ex.save_git_info, ex.base_dir)
    ex.add_package_dependency("sacred", sacred.__version__)  # the file no longer imports it itself
    return observers.attach(ex)
