"""A small decoder-only causal transformer for the modular-arithmetic grokking papers,
and its training loop, in plain PyTorch.

- Power et al. (2022), "Grokking: Generalization Beyond Overfitting on Small Algorithmic
  Datasets" (arXiv 2201.02177): 2 layers, d_model 128, 4 heads, feed-forward 512 ReLU,
  LayerNorm, sinusoidal positions, no dropout; minibatches of min(512, N_train / 2).
- Nanda et al. (2023), "Progress measures for grokking via mechanistic interpretability"
  (arXiv 2301.05217): 1 layer, d_model 128, 4 heads of 32, d_mlp 512, ReLU, no LayerNorm,
  learned positions; full batch.

Both: AdamW, betas (0.9, 0.98), linear learning-rate warmup over 10 steps, weight decay 1.

The model follows nanoGPT's layout (one file, a hyperparameter dataclass, small modules):
pre-norm residual blocks ``x + attn(ln(x))`` then ``x + mlp(ln(x))``, a final LayerNorm
and an unembedding without bias; with ``layer_norm=False`` the norms are identities, as
in Nanda et al.'s model. Attention projections have no bias (as Nanda's); MLP layers do.

``train`` measures train and test loss and accuracy on the whole splits at every
``eval_every``-th step (every step by default) from the parameters before that step's
update, keeps them as device tensors and reduces them once per chunk, so threshold steps
are exact without a host synchronisation per step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from toymodels.layers import mlp
from toymodels.modular import ModularTask
from toymodels.phases import TrainOutcome, first_crossing

POSITIONS = ("sinusoidal", "learned")
DEVICES = ("auto", "cpu", "cuda")
METRICS = ("train.loss", "train.acc", "test.loss", "test.acc")


def select_device(device: str = "auto") -> torch.device:
    """"auto": the GPU when one is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


# ---------------------------------------------------------------------------- model
@dataclass
class TransformerConfig:
    """Hyperparameters of the decoder-only transformer (defaults: Power et al.)."""

    vocab_size: int  # input tokens
    n_outputs: int  # logits at each position
    context_length: int  # longest input sequence
    n_layers: int = 2
    d_model: int = 128
    n_heads: int = 4  # head size d_model / n_heads
    d_mlp: int = 512  # hidden width of the ReLU MLP
    layer_norm: bool = True  # False: no LayerNorm anywhere (Nanda et al.)
    positions: str = "sinusoidal"  # "sinusoidal" (fixed) or "learned"
    embedding_std: float = 1.0  # token (and learned position) embeddings start N(0, std^2)


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """Vaswani et al.'s fixed encoding: sin / cos of position * 10000^(-2i / d_model)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L, D) -> (B, L, D), or (B, 1, D) for the last position only."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        if last_only:  # the last position may attend to every position: no mask needed
            y = F.scaled_dot_product_attention(q[:, :, -1:], k, v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, heads, L, head size)
        return self.out(y.transpose(1, 2).reshape(B, -1, D))


class Block(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        norm = (lambda: nn.LayerNorm(config.d_model)) if config.layer_norm else nn.Identity
        self.ln_attention, self.ln_mlp = norm(), norm()
        self.attention = CausalSelfAttention(config)
        self.mlp = mlp([config.d_model, config.d_mlp, config.d_model], "relu")

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        x = (x[:, -1:] if last_only else x) + self.attention(self.ln_attention(x), last_only)
        return x + self.mlp(self.ln_mlp(x))


class Transformer(nn.Module):
    """tokens (B, L) -> logits (B, L, n_outputs); position t sees tokens 0..t only."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        if config.positions not in POSITIONS:
            raise ValueError(f"positions={config.positions!r}: use one of {', '.join(POSITIONS)}")
        if config.d_model % config.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        nn.init.normal_(self.embed.weight, std=config.embedding_std)
        if config.positions == "learned":
            self.positions = nn.Parameter(torch.randn(config.context_length, config.d_model) * config.embedding_std)
        else:
            self.register_buffer("positions", sinusoidal_positions(config.context_length, config.d_model))
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_final = nn.LayerNorm(config.d_model) if config.layer_norm else nn.Identity()
        self.unembed = nn.Linear(config.d_model, config.n_outputs, bias=False)

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Logits at every position (B, L, n_outputs), or at the last one only (B, n_outputs).

        ``last_only`` gives the same last-position logits for less work: the last block
        computes its attention query and MLP at the last position only."""
        x = self.embed(tokens) + self.positions[: tokens.shape[1]]
        for index, block in enumerate(self.blocks):
            x = block(x, last_only and index == len(self.blocks) - 1)
        logits = self.unembed(self.ln_final(x))
        return logits[:, -1] if last_only else logits


# ------------------------------------------------------------------------- training
@dataclass
class TrainSettings:
    """AdamW with a linear warmup, full batch or shuffled minibatches."""

    train_steps: int
    lr: float = 1e-3
    weight_decay: float = 1.0  # decoupled (AdamW)
    betas: tuple = (0.9, 0.98)
    warmup_steps: int = 10  # lr rises linearly to ``lr`` over the first steps: lr * min(1, (step + 1) / warmup)
    batch_size: int = 0  # 0: full batch; else examples per step, drawn without replacement each epoch
    eval_every: int = 1  # metrics on the whole splits every this many steps (1: exact threshold steps)


def warmup_factor(step: int, warmup_steps: int) -> float:
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def train(model: Transformer, task: ModularTask, settings: TrainSettings, log_every: int,
          on_log: Optional[Callable[[int, dict], None]] = None, acc_threshold: float = 0.9,
          device: str | torch.device = "auto", seed: int = 0, chunk_steps: int = 250,
          progress: Optional[bool] = None) -> TrainOutcome:
    """Train ``model`` on the task's training split; returns the threshold steps and finals.

    Metrics at step s (an evaluated step) come from the parameters before update s; the
    loss is cross-entropy of the answer token predicted at the last input position
    ("="), and accuracy is its argmax against the answer. With full batch the train
    metrics reuse the training forward. ``on_log(step, metrics)`` is called in step order
    at evaluated steps that are multiples of ``log_every``, at each first threshold
    crossing and at the last step. ``seed`` seeds the minibatch order. The model is
    trained on ``device`` ("auto": CUDA if available) and left there.
    """
    device = select_device(device) if isinstance(device, str) else device
    model.to(device)
    train_inputs, train_answers = (t.to(device) for t in task.split(train=True))
    test_inputs, test_answers = (t.to(device) for t in task.split(train=False))
    n_train, n_test = len(train_answers), len(test_answers)
    full_batch = settings.batch_size <= 0 or settings.batch_size >= n_train
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=settings.betas,
                                  weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_factor(s, settings.warmup_steps))
    generator = torch.Generator(device=device).manual_seed(seed)
    batches: list[torch.Tensor] = []  # the rest of the current epoch's minibatch indices

    def answer_loss_and_correct(inputs, answers):
        logits = model(inputs, last_only=True)
        loss = F.cross_entropy(logits, answers, reduction="sum")
        return loss, (logits.argmax(-1) == answers).sum()

    outcome = TrainOutcome(steps=0)
    records: list[tuple[int, torch.Tensor]] = []  # (step, [train loss sum, train correct, test loss sum, test correct])
    bar = tqdm(total=settings.train_steps, desc="train", unit="step", disable=None if progress is None else not progress,
               mininterval=0.5, dynamic_ncols=True)
    totals = torch.tensor([n_train, n_train, n_test, n_test], dtype=torch.float64)

    def flush() -> None:
        """Reduce a chunk of per-step records to metrics, thresholds and log calls."""
        steps = [step for step, _ in records]
        sums = torch.stack([values for _, values in records]).cpu().double() / totals  # one sync per chunk
        records.clear()
        metrics = dict(zip(METRICS, sums.T.numpy()))  # each (K,)
        crossings = set()
        for name, key in (("t_train", "train.acc"), ("t_test", "test.acc")):
            if getattr(outcome, name) is None:
                index = first_crossing(metrics[key], acc_threshold)
                if index is not None:
                    setattr(outcome, name, steps[index])
                    crossings.add(steps[index])
        outcome.steps = steps[-1] + 1
        outcome.final = {name: float(values[-1]) for name, values in metrics.items()}
        if on_log is not None:
            for i, step in enumerate(steps):
                if step % log_every == 0 or step in crossings or step == settings.train_steps - 1:
                    on_log(step, {name: float(values[i]) for name, values in metrics.items()})
        bar.set_postfix({"train": f"{outcome.final['train.acc']:.2f}", "test": f"{outcome.final['test.acc']:.2f}"},
                        refresh=False)

    model.train()
    chunk_start = 0
    for step in range(settings.train_steps):
        evaluate = step % settings.eval_every == 0 or step == settings.train_steps - 1
        if full_batch:
            inputs, answers = train_inputs, train_answers
        else:
            if not batches:
                batches = list(torch.randperm(n_train, device=device, generator=generator).split(settings.batch_size))
            rows = batches.pop(0)
            inputs, answers = train_inputs[rows], train_answers[rows]
        loss_sum, correct = answer_loss_and_correct(inputs, answers)
        if evaluate:
            with torch.no_grad():
                if full_batch:
                    train_metrics = (loss_sum.detach(), correct)
                else:
                    train_metrics = answer_loss_and_correct(train_inputs, train_answers)
                test_metrics = answer_loss_and_correct(test_inputs, test_answers)
                records.append((step, torch.stack([train_metrics[0], train_metrics[1].to(loss_sum.dtype),
                                                   test_metrics[0], test_metrics[1].to(loss_sum.dtype)])))
        optimizer.zero_grad(set_to_none=True)
        (loss_sum / len(answers)).backward()
        optimizer.step()
        schedule.step()
        bar.update()  # a full-size step is slow enough on a CPU to want a live bar
        if step - chunk_start + 1 == chunk_steps or step == settings.train_steps - 1:
            if records:
                flush()
            chunk_start = step + 1
    bar.close()
    return outcome
