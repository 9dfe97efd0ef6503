"""What a sweep is: its points, their keys and configs, and how they group into blocks."""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Point:
    """One run of a sweep: named configs and config updates, its identity, and (once
    ``point_configs`` has built it) the full config its run will see, with ``pinned``: the
    values of the keys its named configs set."""

    named_configs: tuple
    updates: dict = field(hash=False)
    key: str = ""
    config: dict = field(default=None, hash=False, compare=False)
    pinned: dict = field(default=None, hash=False, compare=False)

    def differences(self, recorded: dict) -> dict:
        """The pinned keys whose value in a run's ``recorded`` config is not this point's:
        ``{key: (recorded, now)}``. A key the run's config does not have is not compared."""
        return {key: (recorded[key], value) for key, value in (self.pinned or {}).items()
                if key in recorded and _canonical(recorded[key]) != _canonical(value)}

    def describe(self) -> str:
        parts = list(self.named_configs) + [f"{k}={v}" for k, v in self.updates.items()]
        return " ".join(parts)


def _canonical(value) -> str:
    # a tuple and the list it is recorded as agree; so do 10 and the 10.0 a runs table gives back
    # (a CSV column holds one type: an integer key read beside missing values comes back float)
    return json.dumps(_integral(value), sort_keys=True, default=str)


def _integral(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


def point_key(experiment: str, named_configs, updates: dict) -> str:
    """Identity of a point: the same experiment, named configs and config updates. The named
    configs count by name here; what they set is checked against each run's recorded config
    (``Point.differences``), so a named config edited since a run does not count that run."""
    text = json.dumps({"experiment": experiment, "named_configs": list(named_configs), "config": updates},
                      sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def expand(experiment: str, spec: dict) -> list[Point]:
    """The points of a sweep spec: variants x grid (cartesian, in the grid's order) x seeds.
    A variant is a named config or a list of them, applied after the spec's ``named_configs``
    in that order (Sacred: a later named config wins), so ``["lstm_5s5a", "cpu"]`` lets
    ``cpu`` set what the model's named config also sets; a dict in the list is config values
    of that variant only (``["small_lstm_5s5a", "cpu", {"epochs": 160}]``), over the spec's
    ``config``."""
    grid = spec.get("grid", {})
    seeds = spec.get("seeds")
    seeds = list(range(seeds)) if isinstance(seeds, int) else seeds
    variants = spec.get("variants") or [None]
    points = []
    for variant in variants:
        variant = () if not variant else (variant,) if isinstance(variant, str) else tuple(variant)
        named = tuple(spec.get("named_configs", [])) + tuple(v for v in variant if isinstance(v, str))
        own = {key: value for part in variant if isinstance(part, dict) for key, value in part.items()}
        for values in itertools.product(*grid.values()):
            for seed in seeds if seeds is not None else [None]:
                updates = {**spec.get("config", {}), **own}
                updates.update(zip(grid, values))
                if seed is not None:
                    updates["seed"] = seed
                points.append(Point(named, updates, point_key(experiment, named, updates)))
    return points


def parse_value(text: str):
    """A command-line value: a Python/JSON literal (1e-3, 10, true, [1, 2]) or else a string."""
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


_MODULES: dict = {}


def load_experiment(path: str):
    """The experiment module of ``path`` (imported once per process, not as __main__)."""
    path = str(Path(path).resolve())
    if path not in _MODULES:
        if not Path(path).is_file():
            raise SystemExit(f"{path}: no such experiment file")
        name = "toylab_sweep_" + hashlib.sha1(path.encode()).hexdigest()[:8]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None:
            raise SystemExit(f"cannot import {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if not hasattr(module, "ex"):
            raise SystemExit(f"{path} defines no Sacred experiment `ex`")
        _MODULES[path] = module
    return _MODULES[path]


def point_configs(module, points: list[Point]) -> list[Point]:
    """The points with their full configs, as their runs will see them: the experiment's
    config hooks validate each (a harness.ConfigError stops the sweep before anything runs).
    Nothing is recorded."""
    out, keys_of = [], {}
    for point in points:
        run = module.ex._create_run(config_updates=dict(point.updates), named_configs=list(point.named_configs),
                                    options={"--unobserved": True, "--loglevel": "ERROR"})
        config = dict(run.config)
        pinned = set()
        for name in point.named_configs:
            if name not in keys_of:
                keys_of[name] = set(module.ex.named_configs[name]())  # the keys its body assigns
            pinned |= keys_of[name]
        out.append(Point(point.named_configs, point.updates, point.key, config,
                         {key: config[key] for key in sorted(pinned) if key in config}))
    return out


def blocks(module, points: list[Point], block_size: int, n_workers: int = 1) -> list[list[Point]]:
    """Points grouped by the experiment's ``block_key``: at most ``block_size`` a block, and as
    many blocks as it takes to keep ``n_workers`` busy (a multiple of it, of even size)."""
    key_of = getattr(module, "block_key", None)
    if key_of is None or not hasattr(module, "train_block") or block_size <= 1:
        return [[p] for p in points]
    groups: dict = {}
    singles = []
    for point in points:
        key = key_of(point.config)
        (singles.append([point]) if key is None else groups.setdefault(key, []).append(point))
    out = []
    for group in groups.values():
        n_blocks = -(-len(group) // block_size)
        n_blocks = min(len(group), -(-n_blocks // n_workers) * n_workers)
        out.extend(group[i::n_blocks] for i in range(n_blocks))  # interleaved: neighbours spread over blocks
    return out + singles
