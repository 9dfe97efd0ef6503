"""Declarative config checks: every refusal is one line, ``KEY=VALUE is not allowed: WHY``.

An experiment lists its checks once and hands them to Sacred as a config hook:

    ex.config_hook(harness.checks(
        choice({"loss": LOSSES, "dtype": DTYPES}),
        integer({"p": 2, "train_steps": 1}),             # integers >= the minimum
        positive("encoder_lr", "decoder_lr"),
        within("train_fraction", 0, 1),                   # open interval
        divides("n_heads", "d_model"),
        cuda_available("device"),
        rule("batch_size", lambda c: c["batch_size"] <= n_train(c), lambda c: f"at most {n_train(c)}"),
    ))

Keys may be dotted (``"dataset.num_train"``) for nested config sections. The hook runs
before any run is recorded, so a refused config leaves nothing behind: Sacred prints the
one line and the command exits non-zero.
"""
from __future__ import annotations

import numbers
from typing import Callable, Iterable, Optional

from sacred.utils import SacredError


class ConfigError(SacredError):
    """A config value outside what the experiment allows; printed as one line, no traceback."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)


ConfigError.__module__ = "harness"  # Sacred prints the qualified name: "harness.ConfigError: ..."

Check = Callable[[dict], None]


def refuse(key: str, value, why: str) -> ConfigError:
    """The one error line every check produces (raise it)."""
    return ConfigError(f"{key}={value!r} is not allowed: {why}")


def value_of(config: dict, key: str):
    """``config[key]``, where a dotted key walks into nested sections."""
    for part in key.split("."):
        config = config[part]
    return config


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def choice(allowed: dict) -> Check:
    """Each key's value is one of its allowed values."""
    def check(config):
        for key, values in allowed.items():
            if value_of(config, key) not in values:
                raise refuse(key, value_of(config, key), f"use one of {', '.join(map(str, values))}")
    return check


def integer(minimums: dict) -> Check:
    """Each key is an integer >= its minimum."""
    def check(config):
        for key, minimum in minimums.items():
            value = value_of(config, key)
            if not _is_integer(value) or value < minimum:
                raise refuse(key, value, f"{key} must be an integer >= {minimum}")
    return check


def integer_list(minimums: dict) -> Check:
    """Each key is a non-empty list of integers, each >= its minimum."""
    def check(config):
        for key, minimum in minimums.items():
            value = value_of(config, key)
            if not (isinstance(value, (list, tuple)) and value
                    and all(_is_integer(item) and item >= minimum for item in value)):
                raise refuse(key, value, f"{key} must be a non-empty list of integers >= {minimum}")
    return check


def boolean(*keys: str) -> Check:
    def check(config):
        for key in keys:
            if not isinstance(value_of(config, key), bool):
                raise refuse(key, value_of(config, key), "use true or false")
    return check


def positive(*keys: str) -> Check:
    """Each key is a number > 0."""
    def check(config):
        for key in keys:
            value = value_of(config, key)
            if not (_is_number(value) and value > 0):
                raise refuse(key, value, f"{key} must be > 0")
    return check


def non_negative(*keys: str, why: str = "") -> Check:
    """Each key is a number >= 0 (``why`` adds what 0 means)."""
    def check(config):
        for key in keys:
            value = value_of(config, key)
            if not (_is_number(value) and value >= 0):
                raise refuse(key, value, f"{key} must be >= 0" + (f" ({why})" if why else ""))
    return check


def within(key: str, low: float, high: float, closed: str = "neither", what: str = "") -> Check:
    """``low < value < high``; ``closed`` is "neither", "low", "high" or "both"."""
    brackets = {"neither": "()", "low": "[)", "high": "(]", "both": "[]"}[closed]

    def check(config):
        value = value_of(config, key)
        inside = _is_number(value) and (value >= low if brackets[0] == "[" else value > low) and (
            value <= high if brackets[1] == "]" else value < high)
        if not inside:
            raise refuse(key, value, f"{key} must be in {brackets[0]}{low}, {high}{brackets[1]}"
                         + (f", {what}" if what else ""))
    return check


def multiple_of(key: str, step: int, why: str = "") -> Check:
    def check(config):
        if value_of(config, key) % step:
            raise refuse(key, value_of(config, key), f"it must be a multiple of {step}" + (f" ({why})" if why else ""))
    return check


def divides(divisor: str, key: str, when: Optional[Callable[[dict], bool]] = None) -> Check:
    """``config[divisor]`` divides ``config[key]`` (e.g. heads divide the model width)."""
    def check(config):
        if (when is None or when(config)) and value_of(config, key) % value_of(config, divisor):
            raise refuse(divisor, value_of(config, divisor), f"it must divide {key}={value_of(config, key)}")
    return check


def cuda_available(key: str = "device") -> Check:
    """``device="cuda"`` only where PyTorch sees a CUDA device."""
    def check(config):
        if value_of(config, key) == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise refuse(key, "cuda", "no CUDA device here; use auto or cpu")
    return check


def rule(key: str, holds: Callable[[dict], bool], why, when: Optional[Callable[[dict], bool]] = None) -> Check:
    """A check of the experiment's own: ``holds(config)`` must be true (``why``: text, or config -> text)."""
    def check(config):
        if (when is None or when(config)) and not holds(config):
            raise refuse(key, value_of(config, key), why(config) if callable(why) else why)
    return check


def checks(*rules: Iterable[Check]):
    """A Sacred config hook running ``rules`` in order; the first refusal stops the command."""
    def hook(config, command_name, logger):
        for check in rules:
            check(config)
        return {}
    return hook
