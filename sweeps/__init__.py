"""Sweeps on Dask: the cartesian product of config values, every point an ordinary Sacred run.

    python -m sweeps experiments/grokking.py --sweep phase_mse_quick
    python -m sweeps experiments/grokking.py --grid decoder_lr=1e-5,1e-4,1e-3 \\
        --grid decoder_weight_decay=0,5,10 --seeds 3 with paper train_steps=2000
    python -m sweeps experiments/grokking.py --sweep phase_mse --workers 2
    python -m sweeps experiments/grokking.py --sweep phase_mse --scheduler tcp://10.0.0.5:8786
    python -m sweeps experiments/grokking.py --sweep phase_mse --slurm \\
        --slurm-partition cpu --slurm-walltime 02:00:00 --slurm-memory 8GB --slurm-jobs 4

The package, one idea per module:

- ``points``: what a sweep is: named configs x grid x seeds, each point with a stable key
  and its full config (built once, on the coordinator, which also validates it).
- ``claims``: where runs are recorded and how a point is claimed, exactly once (file
  storage with fcntl locks, or MongoDB documents with a lease).
- ``worker``: what a Dask worker does with a block of points.
- ``cluster``: the Dask cluster (local processes, an existing scheduler, SLURM) and the
  coordinator loop.
- ``summary``: the table and counts printed at the end.
- ``__main__``: the command line.

What an experiment file may declare (module level, all optional):

- ``SWEEPS = {name: {"grid": {key: [values]}, "named_configs": [...], "variants": [...],
  "config": {key: value}, "seeds": N or [seeds]}}``: named sweeps, plain JSON data. The
  points are variants x grid x seeds (a variant: a named config, or a list of them applied
  in order after ``named_configs``, where a dict is config values of that variant only);
  ``--grid``, ``--seeds`` and ``with`` extend or override a named sweep.
- ``SWEEP_RESULTS = ("phase",)``: result keys the summary shows per point and counts.
- ``block_key(config) -> str | None`` and ``train_block(configs) -> [share, ...]``: points
  whose configs have the same key are trained together (in blocks of ``--block-size``);
  each point is then recorded by its own run, whose ``main`` receives its share as its
  first argument (``main(share=None, ...)``; None when it trains alone).

Every point is recorded by the usual observers (file storage, or MongoDB with
TOYLAB_MONGO_URL: every worker records to the same store), with ``meta.sweep`` (the
sweep's name, ``--name``) and ``meta.sweep_point`` (the point's key) in its run record.
Re-running a stopped sweep runs only what is missing; a point whose worker died is retried;
no point gets two COMPLETED runs. Failed points are listed at the end with their run ids
and the command exits 1.
"""
from sweeps.claims import FileStore, MongoStore, default_store
from sweeps.cluster import make_client, run_sweep, slurm_cluster
from sweeps.points import Point, expand, load_experiment, parse_value, point_configs
from sweeps.summary import print_summary
from sweeps.worker import run_block

__all__ = ["Point", "expand", "load_experiment", "parse_value", "point_configs", "FileStore", "MongoStore",
           "default_store", "run_block", "make_client", "slurm_cluster", "run_sweep", "print_summary"]
