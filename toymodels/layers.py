"""Layers shared by the toy models: activations by name and the multilayer perceptron."""
from __future__ import annotations

from torch import nn

# name -> module; each experiment offers the subset its models support
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation_module(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after the last).

    Layers are built first to last, so a seeded model draws the same initial parameters
    (and has the same state-dict keys) as one written out as nn.Sequential(Linear, act, ...)."""
    layers: list[nn.Module] = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            layers.append(activation_module(activation))
        layers.append(nn.Linear(fan_in, fan_out))
    return nn.Sequential(*layers)
