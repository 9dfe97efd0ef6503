"""Representation quality of a learned symbol embedding (Liu et al. 2022, section 4).

The addition task is solved by a *linear* representation: symbols evenly spaced,
E_k = a + k b. Linearity is measured through parallelograms: for i + n = j + m the
four embeddings close a parallelogram, E_i + E_n - E_j - E_m = 0.

- ``parallelograms(p)``: the quadruples (i, n, j, m), i < j <= m < n, i + n = j + m.
- ``rqi(E)``: the Representation Quality Index, the fraction of parallelograms present.
- ``degrees_of_freedom(train_pairs, p)``: how many directions of E the training set
  leaves undetermined (2 means only translation and scale: the linear structure is
  forced by the data).
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

# A parallelogram counts as present when the mean squared closing error of the
# normalised embedding is below this (the paper's value).
PARALLELOGRAM_TOLERANCE = 0.01


@functools.lru_cache(maxsize=None)
def parallelograms(p: int) -> np.ndarray:
    """All (i, n, j, m) with i < j <= m < n and i + n = j + m, shape (count, 4)."""
    quads = [
        (i, n, j, m)
        for i, j, m, n in itertools.combinations_with_replacement(range(p), 4)
        if i < j and m < n and i + n == j + m
    ]
    quads = np.array(quads, dtype=np.int64).reshape(-1, 4)
    quads.flags.writeable = False  # cached: shared by every caller
    return quads


def parallelogram_matrix(quads: np.ndarray, p: int) -> np.ndarray:
    """A with one row e_i + e_n - e_j - e_m per quadruple, so A @ E is the closing error."""
    A = np.zeros((len(quads), p))
    rows = np.arange(len(quads))
    for column, sign in zip(range(4), (1.0, 1.0, -1.0, -1.0)):
        np.add.at(A, (rows, quads[:, column]), sign)
    return A


def rqi(embedding, tolerance: float = PARALLELOGRAM_TOLERANCE) -> torch.Tensor:
    """RQI of one embedding (p, d) or of a stack of them (..., p, d); values in [0, 1].

    Works on a batch of snapshots at once so the training loop can score every step of
    a chunk with one matrix product instead of one call per step.
    """
    E = torch.as_tensor(embedding)
    p = E.shape[-2]
    A = torch.as_tensor(_parallelogram_matrix_for(p), dtype=E.dtype)
    normalised = (E - E.mean(dim=-2, keepdim=True)) / E.std(dim=-2, keepdim=True)
    closing_error = (A @ normalised).pow(2).mean(dim=-1)  # (..., n_parallelograms)
    return (closing_error < tolerance).to(torch.float64).mean(dim=-1)


def implied_relations(train_pairs, p: int) -> np.ndarray:
    """Rows e_i + e_n - e_j - e_m for every two training pairs with the same sum.

    A model that fits both (i, n) and (j, m) to the same label is pushed towards
    E_i + E_n = E_j + E_m: these are the equations the training set imposes.
    """
    by_sum: dict[int, list[tuple[int, int]]] = {}
    for i, j in np.asarray(train_pairs).tolist():
        by_sum.setdefault(i + j, []).append((i, j))
    rows = []
    for same_sum in by_sum.values():
        for (i, n), (j, m) in itertools.combinations(same_sum, 2):
            row = np.zeros(p)
            np.add.at(row, [i, n], 1.0)
            np.add.at(row, [j, m], -1.0)
            rows.append(row)
    return np.array(rows).reshape(-1, p)


def degrees_of_freedom(train_pairs, p: int, tolerance: float = 1e-8) -> int:
    """Number of zero eigenvalues of A_D^T A_D for the training set's relations A_D.

    Equals p - rank(A_D). 2 (translation and scale) means the training set determines
    the linear structure uniquely; more means some symbols are left free.
    """
    A = implied_relations(train_pairs, p)
    eigenvalues = np.linalg.eigvalsh(A.T @ A) if len(A) else np.zeros(p)
    return int(np.sum(np.abs(eigenvalues) < tolerance))


@functools.lru_cache(maxsize=None)
def _parallelogram_matrix_for(p: int) -> np.ndarray:
    return parallelogram_matrix(parallelograms(p), p)
