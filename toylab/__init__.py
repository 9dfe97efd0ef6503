"""The ``toylab`` command: one command line for the tools around the experiments.

The experiments themselves stay Sacred command lines (``python experiments/grokking.py with
p=10 train_fraction=0.45``); ``toylab`` runs what is around them: sweeps, the local board,
sync, a table of runs in the terminal and export to CSV or Parquet. ``toylab --help`` lists
the subcommands.
"""
