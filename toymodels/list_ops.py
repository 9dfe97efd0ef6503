"""List operations for a small transformer encoder: data, model, training, attention.

Examples are token sequences such as ``[CLS] First ( 2 , 5 , 8 )`` whose label is the
answer digit (here 2). Operations: First, Second, Last, Max, Min over lists of digits
0-9 of variable length; Second needs two elements, so its lists have at least two.
Sequences are padded to a common length; the padding mask (True at padding, PyTorch's
``key_padding_mask`` convention) keeps attention off the padding.

The model: token embedding + positional encoding ("sinusoidal", "learned" or "none": First
/ Second / Last need positions, Max / Min do not), pre-norm encoder layers whose attention
weights can be returned, and a readout from the [CLS] token ("cls") or the mean over
non-padding tokens ("mean") to 10 digit logits.

Attention entropy of a head for one query: H = -sum_j a_j log a_j over the unmasked keys,
between 0 (one key) and log n (uniform over n keys); ``attention_entropy`` reports H / log n.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from toymodels.classifier import evaluate, predict, train_epoch
from toymodels.layers import mlp
from toymodels.transformer import sinusoidal_positions

OPERATIONS = ("First", "Second", "Last", "Max", "Min")
SIZES = {"small": 1000, "medium": 10000, "large": 100000}  # examples before the 80/10/10 split
POSITIONS = ("sinusoidal", "learned", "none")
READOUTS = ("cls", "mean")
SPLITS = ("train", "val", "test")
N_DIGITS = 10  # digits 0-9: the input symbols and the answer classes

PAD, CLS = "<pad>", "<cls>"
VOCABULARY = (PAD, CLS, *OPERATIONS, "(", ",", ")", *(str(d) for d in range(N_DIGITS)))
TOKEN_ID = {token: index for index, token in enumerate(VOCABULARY)}
MIN_LENGTH = {"First": 1, "Second": 2, "Last": 1, "Max": 1, "Min": 1}  # Second needs two elements


def answer(operation: str, digits: list[int]) -> int:
    """The label: what ``operation`` returns on the list (Max / Min of ties is the tied value)."""
    if operation == "First":
        return digits[0]
    if operation == "Second":
        return digits[1]
    if operation == "Last":
        return digits[-1]
    if operation == "Max":
        return max(digits)
    if operation == "Min":
        return min(digits)
    raise ValueError(f"unknown operation {operation!r}: use one of {', '.join(OPERATIONS)}")


def tokens_of(operation: str, digits: list[int]) -> list[str]:
    """``[CLS] Op ( d , d , ... )``."""
    body = []
    for k, digit in enumerate(digits):
        body += [",", str(digit)] if k else [str(digit)]
    return [CLS, operation, "(", *body, ")"]


def sequence_length(max_length: int) -> int:
    """Tokens of the longest example: [CLS], the operation, brackets, digits and commas."""
    return 4 + 2 * max_length - 1


# ----------------------------------------------------------------------------- data
@dataclass
class ListOpsData:
    """Every example of one dataset: padded token ids, padding mask, labels, operation index."""

    tokens: torch.Tensor  # (N, L) token ids, PAD after the end
    padding: torch.Tensor  # (N, L) bool, True at padding
    labels: torch.Tensor  # (N,) answer digit
    operation: torch.Tensor  # (N,) index into ``operations``
    operations: tuple
    texts: list = field(default_factory=list)  # "First ( 2 , 5 , 8 )"

    def __len__(self):
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ListOpsData":
        return ListOpsData(self.tokens[index], self.padding[index], self.labels[index], self.operation[index],
                           self.operations, [self.texts[i] for i in index.tolist()])

    @property
    def inputs(self) -> tuple:
        return self.tokens, self.padding


def make_examples(n: int, operations=OPERATIONS, min_length: int = 1, max_length: int = 8,
                  seed: int = 0) -> ListOpsData:
    """``n`` examples, the operations balanced (counts differ by at most one, order shuffled),
    each list of uniformly random length in [min_length, max_length] (at least 2 for Second)
    with uniformly random digits."""
    generator = torch.Generator().manual_seed(seed)
    operations = tuple(operations)
    op_index = torch.arange(n) % len(operations)
    op_index = op_index[torch.randperm(n, generator=generator)]
    width = sequence_length(max_length)
    tokens = torch.full((n, width), TOKEN_ID[PAD], dtype=torch.long)
    labels = torch.empty(n, dtype=torch.long)
    texts = []
    for k, index in enumerate(op_index.tolist()):
        operation = operations[index]
        low = max(min_length, MIN_LENGTH[operation])
        length = int(torch.randint(low, max_length + 1, (1,), generator=generator))
        digits = torch.randint(0, N_DIGITS, (length,), generator=generator).tolist()
        sequence = tokens_of(operation, digits)
        tokens[k, :len(sequence)] = torch.tensor([TOKEN_ID[t] for t in sequence])
        labels[k] = answer(operation, digits)
        texts.append(" ".join(sequence[1:]))
    return ListOpsData(tokens, tokens == TOKEN_ID[PAD], labels, op_index, operations, texts)


def split(data: ListOpsData, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict:
    """Random train / val / test subsets in the given proportions (80/10/10 by default)."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    n_train = round(fractions[0] * len(data))
    n_val = round(fractions[1] * len(data))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(data))}
    return {name: data.subset(order[start:stop]) for name, (start, stop) in bounds.items()}


# ---------------------------------------------------------------------------- model
@dataclass
class ListOpsConfig:
    vocab_size: int = len(VOCABULARY)
    context_length: int = sequence_length(8)
    n_classes: int = N_DIGITS
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128  # hidden width of each layer's feed-forward block
    dropout: float = 0.1
    positions: str = "sinusoidal"  # "sinusoidal", "learned" or "none"
    readout: str = "cls"  # "cls": the [CLS] token's final state; "mean": mean over non-padding tokens


class EncoderLayer(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + feed_forward(norm(x)); returns the
    attention weights per head (batch, heads, queries, keys) when asked."""

    def __init__(self, config: ListOpsConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.d_model)
        self.attention = nn.MultiheadAttention(config.d_model, config.n_heads, dropout=config.dropout,
                                               batch_first=True)
        self.feed_forward_norm = nn.LayerNorm(config.d_model)
        self.feed_forward = mlp([config.d_model, config.d_ff, config.d_model], "relu")
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, padding, need_weights: bool = False):
        h = self.attention_norm(x)
        attended, weights = self.attention(h, h, h, key_padding_mask=padding, need_weights=need_weights,
                                           average_attn_weights=False)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        return x, weights


class ListOpsTransformer(nn.Module):
    def __init__(self, config: ListOpsConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=TOKEN_ID[PAD])
        if config.positions == "learned":
            self.position = nn.Parameter(torch.randn(config.context_length, config.d_model) * 0.02)
        elif config.positions == "sinusoidal":
            self.register_buffer("position", sinusoidal_positions(config.context_length, config.d_model))
        elif config.positions == "none":
            self.position = None
        else:
            raise ValueError(f"positions={config.positions!r}: use one of {', '.join(POSITIONS)}")
        if config.readout not in READOUTS:
            raise ValueError(f"readout={config.readout!r}: use one of {', '.join(READOUTS)}")
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_layers))
        self.final_norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.n_classes)

    def forward(self, tokens, padding, return_attention: bool = False):
        # No sqrt(d_model) scaling of the token embedding (Vaswani et al. scale it): scaled, the
        # tokens drown the positional signal and First / Second / Last stall for thousands of steps.
        x = self.embedding(tokens)
        if self.position is not None:
            x = x + self.position[: tokens.shape[1]]
        attention = []
        for layer in self.layers:
            x, weights = layer(x, padding, need_weights=return_attention)
            attention.append(weights)
        x = self.final_norm(x)
        if self.config.readout == "cls":
            pooled = x[:, 0]
        else:
            keep = (~padding).unsqueeze(-1).to(x.dtype)
            pooled = (x * keep).sum(1) / keep.sum(1)
        logits = self.head(pooled)
        return (logits, attention) if return_attention else logits


def parameter_counts(model: nn.Module) -> dict:
    """Trainable parameters per top-level part and in total."""
    counts = {name: sum(p.numel() for p in part.parameters() if p.requires_grad)
              for name, part in model.named_children()}
    counts.update({name: p.numel() for name, p in model.named_parameters(recurse=False) if p.requires_grad})
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


# ---------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    history: list  # per epoch: {"train.loss", "train.acc", "val.loss", "val.acc"}
    best_epoch: int
    best_state: dict  # parameters at the best validation accuracy (CPU tensors)


def train(model: ListOpsTransformer, splits: dict, epochs: int, lr: float, batch_size: int, seed: int,
          on_epoch: Optional[Callable[[int, dict], None]] = None, progress: bool = False) -> TrainResult:
    """Adam on cross-entropy; after each epoch the running train loss / accuracy over the
    epoch's batches and the validation loss / accuracy; keeps the parameters of the best
    validation accuracy (the first epoch reaching it)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history, best = [], (-1.0, 0, None)
    for epoch in tqdm(range(1, epochs + 1), desc="epochs", disable=not progress):
        train_stats = train_epoch(model, optimizer, splits["train"].inputs, splits["train"].labels, batch_size,
                                  generator)
        val_stats = evaluate(model, splits["val"].inputs, splits["val"].labels)
        metrics = {"train.loss": train_stats.loss, "train.acc": train_stats.acc, "val.loss": val_stats.loss,
                   "val.acc": val_stats.acc}
        history.append(metrics)
        if val_stats.acc > best[0]:
            best = (val_stats.acc, epoch, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return TrainResult(history, best[1], best[2] if best[2] is not None else copy.deepcopy(model.state_dict()))


def accuracy_by_operation(model: nn.Module, data: ListOpsData) -> dict:
    """Test accuracy per operation name (and "all")."""
    correct = predict(model, data.inputs).argmax(-1) == data.labels
    result = {name: correct[data.operation == k].float().mean().item()
              for k, name in enumerate(data.operations) if (data.operation == k).any()}
    result["all"] = correct.float().mean().item()
    return result


def top_predictions(model: nn.Module, data: ListOpsData, n_examples: int, k: int = 5) -> list[dict]:
    """The first ``n_examples`` examples with the true answer and the top-k digits and probabilities."""
    probabilities = F.softmax(predict(model, data.inputs)[:n_examples], -1)
    top = probabilities.topk(k, -1)
    return [{"text": data.texts[i], "label": data.labels[i].item(),
             "top": list(zip(top.indices[i].tolist(), top.values[i].tolist()))} for i in range(len(top.indices))]


@torch.no_grad()
def attention_maps(model: ListOpsTransformer, data: ListOpsData, index: int) -> list[torch.Tensor]:
    """Attention weights of example ``index`` per layer, (heads, n, n), over its n real tokens."""
    model.eval()
    n = int((~data.padding[index]).sum())
    _, attention = model(data.tokens[index:index + 1], data.padding[index:index + 1], return_attention=True)
    return [weights[0, :, :n, :n] for weights in attention]


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Per head: mean over queries of H / log n, H = -sum_j a_j log a_j over the n unmasked
    keys (``weights`` (heads, n, n) already restricted to them). 0: each query attends to one
    key (focused); 1: uniform (distributed)."""
    n = weights.shape[-1]
    if n < 2:
        return torch.zeros(weights.shape[0])
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)
    return (entropy / math.log(n)).mean(-1)


def first_example_per_operation(data: ListOpsData) -> dict:
    """Operation name -> index of its first example in ``data``."""
    return {name: int((data.operation == k).nonzero()[0]) for k, name in enumerate(data.operations)
            if (data.operation == k).any()}

