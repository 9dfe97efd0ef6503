"""Walks on random finite-state machines, for in-context learning of the machine.

A machine has S states, A actions and a deterministic transition table T[s, a] whose
entries are uniform over the S states. Every sequence gets a machine of its own, so
nothing about a particular table can be memorised across sequences: the model can only
predict the next state from the transitions earlier in the same sequence (in-context
associative recall, Akyurek et al. 2024; Arora et al. 2023).

A walk of n_transitions steps starts in a uniform state and takes uniform actions:
s_0, a_0, s_1, a_1, ..., s_{T-1}, a_{T-1}, s_T with s_{t+1} = T[s_t, a_t]. The model reads
the tokens s_0 a_0 s_1 a_1 ... a_{T-1} and predicts s_{t+1} at each action token a_t.

Tokens live in a fixed vocabulary shared by every dataset: state s is token s and action
a is token ``vocab_states + a``, and the outputs are ``vocab_states`` logits. A model
trained on 5 states and 5 actions therefore fits a machine with 8 and 8 unchanged, which
is what a curriculum (easy -> 5s5a -> 8s8a) needs.

The in-context curve groups predictions by how many times the current (state, action)
pair already appeared earlier in the sequence: at 0 the answer is unknown (chance 1/S),
from 1 on it is determined, so a model that learned in context is near 100% there.

Datasets are generated from a seed with vectorised numpy (one step of the walk for every
sequence at once) and cached as .npz files keyed by their parameters, so repeated runs
share them.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

# The named datasets. "easy" is the first step of a curriculum: 3 states and 3 actions
# (9 table entries instead of 25), so pairs repeat sooner within the same walk length.
DATASETS = {
    "easy": {"n_states": 3, "n_actions": 3, "absorbing": False},
    "5s5a": {"n_states": 5, "n_actions": 5, "absorbing": False},
    "5s8a": {"n_states": 5, "n_actions": 8, "absorbing": False},
    "8s8a": {"n_states": 8, "n_actions": 8, "absorbing": False},
    "absorbing": {"n_states": 5, "n_actions": 5, "absorbing": True},
}
SPLITS = ("train", "val")
NO_ABSORBER = -1  # absorbing_state of a machine without one


@dataclass(frozen=True)
class WalkSpec:
    """Everything that determines a generated dataset (and so its cache key)."""

    n_states: int
    n_actions: int
    absorbing: bool  # True: one state (uniform per machine) maps to itself under every action
    n_transitions: int  # T: steps of each walk (predictions per sequence)
    n_sequences: int
    seed: int
    split: str = "train"  # train and val are independent draws from the same seed
    draw: int | None = None  # fresh training walks: the epoch's own draw (None: the split's one fixed set)

    def cache_name(self) -> str:
        kind = "absorbing" if self.absorbing else "plain"
        draw = "" if self.draw is None else f"_draw{self.draw}"
        return (f"fsm_{self.n_states}s{self.n_actions}a_{kind}_T{self.n_transitions}_N{self.n_sequences}"
                f"_seed{self.seed}_{self.split}{draw}.npz")


@dataclass
class Walks:
    """A dataset of walks, one machine per sequence (numpy arrays, N sequences)."""

    tables: np.ndarray  # (N, S, A) next state of each (state, action)
    states: np.ndarray  # (N, T + 1) s_0 .. s_T
    actions: np.ndarray  # (N, T) a_0 .. a_{T-1}
    absorbing_state: np.ndarray  # (N,) the absorbing state, or NO_ABSORBER

    @property
    def n_states(self) -> int:
        return self.tables.shape[1]

    @property
    def n_actions(self) -> int:
        return self.tables.shape[2]


def generate_walks(spec: WalkSpec) -> Walks:
    """Sample one machine per sequence and walk it with uniform actions (vectorised over
    sequences: the loop runs over the T steps only)."""
    if spec.split not in SPLITS:
        raise ValueError(f"split={spec.split!r}: use one of {', '.join(SPLITS)}")
    S, A, T, N = spec.n_states, spec.n_actions, spec.n_transitions, spec.n_sequences
    # a fixed set keeps the stream it always had; a draw appends 1 + draw (never 0: numpy's
    # SeedSequence pads with zeros, so [seed, split, 0] would be the fixed set again)
    draw = [] if spec.draw is None else [1 + spec.draw]
    rng = np.random.default_rng([spec.seed, SPLITS.index(spec.split)] + draw)
    tables = rng.integers(0, S, size=(N, S, A))
    absorbing_state = np.full(N, NO_ABSORBER)
    rows = np.arange(N)
    if spec.absorbing:
        absorbing_state = rng.integers(0, S, size=N)
        tables[rows, absorbing_state, :] = absorbing_state[:, None]
    actions = rng.integers(0, A, size=(N, T))
    states = np.empty((N, T + 1), dtype=np.int64)
    states[:, 0] = rng.integers(0, S, size=N)
    for t in range(T):
        states[:, t + 1] = tables[rows, states[:, t], actions[:, t]]
    return Walks(tables, states, actions, absorbing_state)


def load_walks(spec: WalkSpec, cache_dir: str | os.PathLike | None) -> Walks:
    """The walks of ``spec``, generated once and then read from ``cache_dir`` (None: no cache).
    The file appears atomically, so runs started together may generate it twice but never
    read half of it."""
    if not cache_dir:
        return generate_walks(spec)
    path = Path(cache_dir) / spec.cache_name()
    if path.is_file():
        with np.load(path) as stored:
            return Walks(**{name: stored[name] for name in ("tables", "states", "actions", "absorbing_state")})
    walks = generate_walks(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz.tmp", delete=False) as handle:
        np.savez(handle, **asdict(walks))
    os.replace(handle.name, path)
    return walks


def repeat_counts(states: np.ndarray, actions: np.ndarray, n_actions: int, chunk: int = 512) -> np.ndarray:
    """(N, T): how many times the pair (s_t, a_t) occurred at an earlier step t' < t.
    Pairwise comparison within each sequence, in chunks of sequences to bound memory."""
    pairs = states[:, : actions.shape[1]] * n_actions + actions
    T = pairs.shape[1]
    earlier = np.tril(np.ones((T, T), dtype=bool), k=-1)  # [t, t'] is True when t' < t
    counts = np.empty(pairs.shape, dtype=np.int64)
    for start in range(0, len(pairs), chunk):
        block = pairs[start:start + chunk]
        same = block[:, :, None] == block[:, None, :]
        counts[start:start + chunk] = (same & earlier).sum(-1)
    return counts


def first_occurrence_fraction(counts: np.ndarray) -> float:
    """p_first: the fraction of predictions whose (state, action) pair is new."""
    return float((counts == 0).mean())


def accuracy_ceiling(counts: np.ndarray, n_states: int) -> float:
    """Best expected accuracy: 1 - p_first * (1 - 1/S) (certain on repeats, chance on new pairs)."""
    return 1.0 - first_occurrence_fraction(counts) * (1.0 - 1.0 / n_states)


@dataclass
class Split:
    """A dataset as model inputs: tokens, targets and what each prediction is grouped by."""

    tokens: torch.Tensor  # (N, 2T) s_0 a_0 s_1 a_1 ... a_{T-1} in the shared vocabulary
    targets: torch.Tensor  # (N, T) s_1 .. s_T, predicted at the action tokens
    counts: torch.Tensor  # (N, T) earlier occurrences of (s_t, a_t): the in-context curve's x
    trivial: torch.Tensor  # (N, T) s_t is absorbing, so the next state is s_t again
    walks: Walks
    vocab_states: int

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def n_states(self) -> int:
        return self.walks.n_states


def to_split(walks: Walks, vocab_states: int) -> Split:
    """Interleave states and actions into tokens (actions shifted past the state tokens)."""
    N, T = walks.actions.shape
    tokens = np.empty((N, 2 * T), dtype=np.int64)
    tokens[:, 0::2] = walks.states[:, :T]
    tokens[:, 1::2] = vocab_states + walks.actions
    counts = repeat_counts(walks.states, walks.actions, walks.n_actions)
    trivial = walks.states[:, :T] == walks.absorbing_state[:, None]
    return Split(torch.from_numpy(tokens), torch.from_numpy(walks.states[:, 1:].copy()), torch.from_numpy(counts),
                 torch.from_numpy(trivial), walks, vocab_states)


def seen_entries(walks: Walks) -> tuple[np.ndarray, np.ndarray]:
    """For the linear probes: at each action token t, which table entries the sequence has
    shown so far (the transitions at steps t' < t), and their values.

    Returns ``seen`` (N, T, S*A) bool and ``entries`` (N, S*A), the flattened table."""
    N, T = walks.actions.shape
    S, A = walks.n_states, walks.n_actions
    pairs = walks.states[:, :T] * A + walks.actions
    shown = np.zeros((N, T, S * A), dtype=bool)
    shown[np.arange(N)[:, None], np.arange(T)[None, :], pairs] = True
    seen = np.cumsum(shown, axis=1) - shown > 0  # strictly earlier steps
    return seen, walks.tables.reshape(N, S * A)
