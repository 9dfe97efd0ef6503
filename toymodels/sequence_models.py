"""Sequence models for the finite-state-machine task: recurrent (LSTM, vanilla tanh RNN)
and a causal transformer, all mapping tokens (B, L) to next-state logits (B, L, outputs)
and exposing their per-layer hidden states for linear probes.

The sizes of the plan (``PRESETS``), with their parameter counts for the shared 16-token
vocabulary and 8 outputs:

    lstm           LSTM, d_model 256, 2 layers           ~1.06M
    small_lstm     LSTM, d_model 64, 2 layers            ~68K
    vanilla_rnn    tanh RNN, d_model 256, 2 layers       ~270K
    small_vanilla  tanh RNN, d_model 64, 2 layers        ~18K
    deep_rnn       tanh RNN, d_model 256, 8 layers       ~1.06M (parameter-matched to lstm)
    transformer    causal transformer, d_model 64, 2 layers, 4 heads, MLP 256   ~110K

A vanilla RNN layer of width d has d(2d + 2) parameters, an LSTM layer four times that,
so 8 vanilla layers match 2 LSTM layers of the same width; the hidden state carried
between steps is d per layer (LSTM: 2d, hidden and cell), which is the recall budget the
"capacity vs architecture" question is about (Arora et al. 2023).
"""
from __future__ import annotations

import torch
from torch import nn

from toymodels import transformer

ARCHITECTURES = ("lstm", "rnn", "transformer")
PRESETS = {
    "lstm": {"model": "lstm", "d_model": 256, "num_layers": 2},
    "small_lstm": {"model": "lstm", "d_model": 64, "num_layers": 2},
    "vanilla_rnn": {"model": "rnn", "d_model": 256, "num_layers": 2},
    "small_vanilla": {"model": "rnn", "d_model": 64, "num_layers": 2},
    "deep_rnn": {"model": "rnn", "d_model": 256, "num_layers": 8},
    "transformer": {"model": "transformer", "d_model": 64, "num_layers": 2},
}


class RecurrentNet(nn.Module):
    """Embedding -> a stack of single-layer LSTMs or tanh RNNs -> linear readout.

    The layers are separate modules (same parameters as one multi-layer nn.LSTM) so that
    every layer's hidden states are available to the probes."""

    def __init__(self, cell: str, vocab_size: int, n_outputs: int, d_model: int, num_layers: int):
        super().__init__()
        layer = {"lstm": nn.LSTM, "rnn": nn.RNN}[cell]
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(layer(d_model, d_model, batch_first=True) for _ in range(num_layers))
        self.head = nn.Linear(d_model, n_outputs)

    def hidden_states(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """[embedding, output of layer 1, ..., output of layer L], each (B, L, d_model)."""
        x = self.embed(tokens)
        states = [x]
        for layer in self.layers:
            x, _ = layer(x)
            states.append(x)
        return states

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden_states(tokens)[-1])


class CausalTransformer(nn.Module):
    """toymodels.transformer's decoder-only model (pre-norm, learned positions, d_mlp =
    4 d_model), with the residual stream after each block exposed for the probes."""

    def __init__(self, vocab_size: int, n_outputs: int, context_length: int, d_model: int, num_layers: int,
                 n_heads: int):
        super().__init__()
        config = transformer.TransformerConfig(vocab_size, n_outputs, context_length, n_layers=num_layers,
                                               d_model=d_model, n_heads=n_heads, d_mlp=4 * d_model,
                                               layer_norm=True, positions="learned",
                                               embedding_std=d_model ** -0.5)
        self.transformer = transformer.Transformer(config)

    def hidden_states(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """[embedding + positions, residual stream after block 1, ..., after block L]."""
        model = self.transformer
        x = model.embed(tokens) + model.positions[: tokens.shape[1]]
        states = [x]
        for block in model.blocks:
            x = block(x)
            states.append(x)
        return states

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(tokens)


def build_model(model: str, vocab_size: int, n_outputs: int, d_model: int, num_layers: int,
                context_length: int, n_heads: int = 4) -> nn.Module:
    """One of ARCHITECTURES; ``context_length`` and ``n_heads`` matter for the transformer only."""
    if model == "transformer":
        return CausalTransformer(vocab_size, n_outputs, context_length, d_model, num_layers, n_heads)
    if model in ("lstm", "rnn"):
        return RecurrentNet(model, vocab_size, n_outputs, d_model, num_layers)
    raise ValueError(f"model={model!r}: use one of {', '.join(ARCHITECTURES)}")


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def state_dict_mismatches(model: nn.Module, state: dict) -> list[str]:
    """Why ``state`` cannot be loaded into ``model`` (empty when it fits): missing and
    unexpected keys, and shape differences."""
    own = model.state_dict()
    problems = [f"missing {key}" for key in own if key not in state]
    problems += [f"unexpected {key}" for key in state if key not in own]
    problems += [f"{key} is {tuple(state[key].shape)}, the model needs {tuple(own[key].shape)}"
                 for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    return problems
