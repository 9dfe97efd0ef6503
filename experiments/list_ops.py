"""A transformer encoder on list operations: First, Second, Last, Max, Min of a digit list.

Flat lists of a few digits and one operation, the seed task behind Long Range Arena's
ListOps (Tay et al. 2020, "Long Range Arena: A Benchmark for Efficient Transformers",
arXiv 2011.04006; its nested lists of length up to 2k are far harder and not comparable).

Question: does a small transformer encoder learn every operation, the positional ones
(First, Second, Last: need position information) as well as the content ones (Max, Min)?
Figures: per-operation test accuracy (bar chart), training curves, and attention maps for
one test example per operation with each head's attention entropy (focused vs distributed).

    python experiments/list_ops.py                     # medium (10k examples), 20 epochs
    python experiments/list_ops.py with small seed=2   # 1k examples
    python experiments/list_ops.py with large          # 100k examples
    python experiments/list_ops.py with no_positions   # ablation: First/Second/Last lose their cue
    python experiments/list_ops.py with ci             # CI-sized: short lists, seconds
"""
import torch

import harness
from analysis.list_ops import attention_figure, operation_bars, training_curves
from toymodels import list_ops
from toymodels.transformer import DEVICES, select_device

ex = harness.experiment("list_ops")

# Named sweeps for `python -m sweeps experiments/list_ops.py --sweep NAME`.
SWEEPS = {
    "sizes": {"variants": ["small", "medium"], "seeds": 5},
    "positions": {"grid": {"positions": ["sinusoidal", "learned", "none"]}, "seeds": 3},
}


@ex.config
def config():
    # --- data: "[CLS] Op ( d , d , ... )" -> the answer digit
    size = "medium"  # "small" (1k examples), "medium" (10k) or "large" (100k), before the 80/10/10 split
    n_examples = list_ops.SIZES.get(size, 0)  # follows size; set it directly for other sizes
    operations = list(list_ops.OPERATIONS)  # balanced: each operation on 1/len(operations) of the examples
    min_length = 1  # digits per list (Second always gets at least 2)
    max_length = 8
    # --- model: a transformer encoder classifier over the 10 answer digits
    d_model = 64
    n_heads = 4
    n_layers = 2
    d_ff = 128  # feed-forward hidden width
    dropout = 0.1
    positions = "sinusoidal"  # "sinusoidal", "learned" or "none" (ablation)
    readout = "cls"  # "cls": the [CLS] token's final state; "mean": mean over the non-padding tokens
    # --- optimisation: Adam, cross-entropy
    lr = 1e-3
    batch_size = 64
    epochs = 20
    # --- reporting
    n_sample_predictions = 20  # test examples written to predictions.txt with their top-5 digits
    focused_below = 0.5  # a head is "focused" when its normalised attention entropy H / log n is below this
    # --- system
    seed = 0  # seeds the examples, the split, the initialisation and the batch order
    torch_threads = 1
    device = "cpu"  # "cpu", "cuda" or "auto"


@ex.named_config
def small():
    """1k examples (800 for training)."""
    size = "small"


@ex.named_config
def medium():
    """10k examples (8000 for training): the original notes' setting, 20 epochs."""
    size = "medium"


@ex.named_config
def large():
    """100k examples (80k for training)."""
    size = "large"


@ex.named_config
def no_positions():
    """Ablation: no positional encoding. First / Second / Last should fall towards chance
    while Max / Min stay learnable (a set function needs no order)."""
    positions = "none"


@ex.named_config
def ci():
    """CI-sized: 2000 examples of lists of 1-4 digits, 10 epochs at lr 3e-3; tens of seconds
    on one loaded core, and every operation is learned."""
    n_examples = 2000
    max_length = 4
    epochs = 10
    lr = 3e-3


def _distinct_list(config):
    operations = config["operations"]
    return isinstance(operations, list) and len(operations) > 0 and len(set(operations)) == len(operations)


def _unknown_operations(config):
    return [name for name in config["operations"] if name not in list_ops.OPERATIONS]


def _max_length_fits(config):
    return config["max_length"] >= config["min_length"] and ("Second" not in config["operations"]
                                                             or config["max_length"] >= 2)


ex.config_hook(harness.checks(
    harness.choice({"size": tuple(list_ops.SIZES), "positions": list_ops.POSITIONS, "readout": list_ops.READOUTS,
                    "device": DEVICES}),
    harness.rule("operations", _distinct_list,
                 f"it must be a non-empty list of distinct names from {', '.join(list_ops.OPERATIONS)}"),
    harness.rule("operations", lambda c: not _unknown_operations(c),
                 lambda c: f"unknown operation {_unknown_operations(c)[0]!r} "
                           f"(allowed: {', '.join(list_ops.OPERATIONS)})"),
    harness.integer({"n_examples": 10, "min_length": 1, "max_length": 1, "d_model": 1, "n_heads": 1, "n_layers": 1,
                     "d_ff": 1, "batch_size": 1, "epochs": 1, "n_sample_predictions": 0, "torch_threads": 1}),
    harness.rule("max_length", _max_length_fits,
                 lambda c: f"it must be >= min_length={c['min_length']} (and >= 2 when Second is asked)"),
    harness.divides("n_heads", "d_model"),
    harness.rule("d_model", lambda c: c["d_model"] % 2 == 0, "it must be even with sinusoidal positions",
                 when=lambda c: c["positions"] == "sinusoidal"),
    harness.positive("lr"),
    harness.within("dropout", 0, 1, closed="low"),
    harness.within("focused_below", 0, 1, closed="low"),
    harness.cuda_available("device"),
))


# ------------------------------------------------------------------ data and model
@ex.capture
def build_splits(n_examples, operations, min_length, max_length, seed):
    data = list_ops.make_examples(n_examples, operations, min_length, max_length, seed=seed)
    return list_ops.split(data, seed=seed)


@ex.capture
def build_model(max_length, d_model, n_heads, n_layers, d_ff, dropout, positions, readout, seed):
    torch.manual_seed(seed)
    config = list_ops.ListOpsConfig(context_length=list_ops.sequence_length(max_length), d_model=d_model,
                                    n_heads=n_heads, n_layers=n_layers, d_ff=d_ff, dropout=dropout,
                                    positions=positions, readout=readout)
    return list_ops.ListOpsTransformer(config)


def to_device(data: list_ops.ListOpsData, device) -> list_ops.ListOpsData:
    return list_ops.ListOpsData(data.tokens.to(device), data.padding.to(device), data.labels.to(device),
                                data.operation.to(device), data.operations, data.texts)


def predictions_text(rows) -> str:
    lines = []
    for row in rows:
        top = "  ".join(f"{digit}:{p:.3f}" for digit, p in row["top"])
        mark = "ok " if row["top"][0][0] == row["label"] else "WRONG"
        lines.append(f"{mark} {row['text']:<40} answer {row['label']}  top-5 {top}")
    return "\n".join(lines) + "\n"


@ex.automain
def main(_run, epochs, lr, batch_size, seed, n_sample_predictions, focused_below, torch_threads, device):
    torch.set_num_threads(torch_threads)
    device = select_device(device)
    splits = {name: to_device(part, device) for name, part in build_splits().items()}
    model = build_model().to(device)
    _run.info["parameters"] = list_ops.parameter_counts(model)
    _run.info["split_sizes"] = {name: len(part) for name, part in splits.items()}
    curves = harness.Curves(_run)
    trained = list_ops.train(model, splits, epochs, lr, batch_size, seed, on_epoch=curves.log,
                             progress=harness.on_terminal())
    model.load_state_dict(trained.best_state)  # everything below is the best checkpoint by val accuracy
    test = splits["test"]
    by_operation = list_ops.accuracy_by_operation(model, test)
    curves.log(trained.best_epoch, {f"test.acc.{name}" if name != "all" else "test.acc": value
                                    for name, value in by_operation.items()})

    # attention of one test example per operation, and each head's normalised entropy
    examples = list_ops.first_example_per_operation(test)
    maps = {name: [m.cpu() for m in list_ops.attention_maps(model, test, index)] for name, index in examples.items()}
    entropy = {name: [list_ops.attention_entropy(m).tolist() for m in maps[name]] for name in examples}
    _run.info["attention_entropy"] = entropy  # operation -> layer -> head: H / log n (0 focused, 1 uniform)

    result = {"test_acc": by_operation["all"], "best_epoch": trained.best_epoch,
              "best_val_acc": max(h["val.acc"] for h in trained.history),
              "final_train_acc": trained.history[-1]["train.acc"],
              **{f"test_acc_{name}": value for name, value in by_operation.items() if name != "all"},
              "min_operation_acc": min(v for k, v in by_operation.items() if k != "all"),
              "focused_heads": sum(h < focused_below for ops in entropy.values() for layer in ops for h in layer),
              "heads_measured": sum(len(layer) for ops in entropy.values() for layer in ops)}
    _run.info.update(result)

    harness.save_torch(_run, trained.best_state, "best_model.pt")
    harness.save_text(_run, predictions_text(list_ops.top_predictions(model, test, n_sample_predictions)),
                      "predictions.txt")
    harness.save_json(_run, entropy, "attention_entropy.json")
    harness.save_figure(_run, operation_bars(by_operation), "per_operation_accuracy.png")
    harness.save_figure(_run, training_curves(trained.history, trained.best_epoch), "training_curves.png")
    for name, index in examples.items():
        harness.save_figure(_run, attention_figure(maps[name], test.texts[index], focused_below),
                            f"attention_{name}.png")
    harness.report(_run, f"best epoch {trained.best_epoch} (val acc {result['best_val_acc']:.3f}); test acc "
                         f"{result['test_acc']:.3f}; "
                         + ", ".join(f"{k} {v:.3f}" for k, v in by_operation.items() if k != "all"))
    return result
