"""Modular-arithmetic datasets of the transformer grokking papers, in plain PyTorch.

Every example is a pair (a, b) of residues mod a prime p with the answer c = a op b mod p:

| operation      | c                  | pairs                      |
|----------------|--------------------|----------------------------|
| addition       | a + b mod p        | all p^2                    |
| subtraction    | a - b mod p        | all p^2                    |
| multiplication | a * b mod p        | all p^2                    |
| division       | a * b^-1 mod p     | b != 0: p (p - 1), p prime |

Two token formats (``sequence``):

- ``"power"`` (Power et al. 2022): ``<eos> a op b = c <eos>``; the vocabulary is the p
  residues then ``<eos>``, ``=`` and the operator; the model predicts over the whole
  vocabulary and the loss and accuracy use the answer token c only.
- ``"nanda"`` (Nanda et al. 2023): ``[a, b, =]``; the vocabulary is the p residues and
  ``=``; the logits over the p residues are read at ``=``.

In both the answer is predicted at the ``=`` position, so ``inputs`` holds each sequence
up to and including ``=``: under a causal mask the tokens after it cannot change the
logits there. ``sequences`` keeps the full Power sequences for inspection.

The train/test split is a random ``train_fraction`` of the examples (rounded to nearest),
drawn from ``seed`` alone, so the same seed gives the same split on any device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

OPERATIONS = {
    "addition": "+",
    "subtraction": "-",
    "multiplication": "*",
    "division": "/",
}
SEQUENCES = ("power", "nanda")


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n ** 0.5) + 1))


def n_examples(p: int, operation: str) -> int:
    """Number of (a, b) pairs of the operation: p^2, or p(p - 1) for division (b != 0)."""
    return p * (p - 1) if operation == "division" else p * p


def n_train_examples(p: int, operation: str, train_fraction: float) -> int:
    """Training examples for a fraction of all examples (rounded to nearest)."""
    return int(round(train_fraction * n_examples(p, operation)))


def modular_inverses(p: int) -> torch.Tensor:
    """inverse[b] = b^-1 mod p for b = 1..p-1 (inverse[0] = 0, unused); p must be prime."""
    if not is_prime(p):
        raise ValueError(f"division mod p needs a prime p, got p={p}")
    residues = torch.arange(p)
    is_inverse = (residues[:, None] * residues[None, :]) % p == 1  # (b, candidate)
    return is_inverse.to(torch.int8).argmax(dim=1)


def apply_operation(a: torch.Tensor, b: torch.Tensor, operation: str, p: int) -> torch.Tensor:
    """c = a op b mod p, elementwise."""
    if operation == "addition":
        return (a + b) % p
    if operation == "subtraction":
        return (a - b) % p
    if operation == "multiplication":
        return (a * b) % p
    if operation == "division":
        if bool((b == 0).any()):
            raise ValueError("division by zero mod p")
        return (a * modular_inverses(p)[b]) % p
    raise ValueError(f"unknown operation {operation!r}: use one of {', '.join(OPERATIONS)}")


@dataclass
class ModularTask:
    """All examples of one binary operation mod p, tokenised, with the train/test split."""

    p: int
    operation: str
    sequence: str  # "power" or "nanda"
    a: torch.Tensor  # (N,) long
    b: torch.Tensor  # (N,) long
    answers: torch.Tensor  # (N,) long, c = a op b mod p (also its token id)
    inputs: torch.Tensor  # (N, L) long, each sequence up to and including "="
    train_mask: torch.Tensor  # (N,) bool
    vocab: tuple  # token names; token id = index

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def n_outputs(self) -> int:
        """Logits the model produces at "=": the whole vocabulary (Power) or the p residues (Nanda)."""
        return self.vocab_size if self.sequence == "power" else self.p

    @property
    def context_length(self) -> int:
        return self.inputs.shape[1]

    @property
    def sequences(self) -> torch.Tensor:
        """The full sequences: inputs followed by the answer (and ``<eos>`` for Power)."""
        tail = [self.answers[:, None]]
        if self.sequence == "power":
            tail.append(torch.full_like(self.answers[:, None], self.vocab.index("<eos>")))
        return torch.cat([self.inputs, *tail], dim=1)

    def split(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, answers) of the training (``train=True``) or the test examples."""
        mask = self.train_mask if train else ~self.train_mask
        return self.inputs[mask], self.answers[mask]

    def decode(self, row: int) -> str:
        """One full sequence as text, e.g. ``<eos> 3 / 5 = 8 <eos>``."""
        return " ".join(self.vocab[t] for t in self.sequences[row].tolist())


def make_modular_task(p: int, operation: str, train_fraction: float, seed: int,
                      sequence: str = "power") -> ModularTask:
    """Every pair (a, b) (b != 0 for division) with a op b mod p, a random ``train_fraction``
    of them for training."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}: use one of {', '.join(OPERATIONS)}")
    if sequence not in SEQUENCES:
        raise ValueError(f"unknown sequence {sequence!r}: use one of {', '.join(SEQUENCES)}")
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(1 if operation == "division" else 0, p)).T
    answers = apply_operation(a, b, operation, p)
    residues = tuple(str(k) for k in range(p))
    if sequence == "power":
        vocab = residues + ("<eos>", "=", OPERATIONS[operation])
        eos, equals, op = p, p + 1, p + 2
        columns = [torch.full_like(a, eos), a, torch.full_like(a, op), b, torch.full_like(a, equals)]
    else:
        vocab = residues + ("=",)
        columns = [a, b, torch.full_like(a, p)]
    generator = torch.Generator().manual_seed(seed)
    train_rows = torch.randperm(len(a), generator=generator)[: n_train_examples(p, operation, train_fraction)]
    train_mask = torch.zeros(len(a), dtype=torch.bool)
    train_mask[train_rows] = True
    return ModularTask(p=p, operation=operation, sequence=sequence, a=a, b=b, answers=answers,
                       inputs=torch.stack(columns, dim=1), train_mask=train_mask, vocab=vocab)
