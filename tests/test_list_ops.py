"""List operations: the data generator's labels, the model's shapes and masks, attention
entropy, the experiment end to end with the replication check at CI size (every operation
learned), bad input, and the walkthrough notebook."""
import json
import os
from pathlib import Path

import pytest
import torch

import analysis.list_ops
import harness
from conftest import REPO
from experiments.list_ops import ex
from toymodels import list_ops


# ---------------------------------------------------------------------------- data
@pytest.mark.parametrize("operation, digits, expected", [
    ("First", [2, 5, 8], 2), ("Second", [2, 5, 8], 5), ("Last", [2, 5, 8], 8), ("Max", [2, 5, 8], 8),
    ("Min", [2, 5, 8], 2),
    ("First", [7], 7), ("Last", [7], 7), ("Max", [7], 7), ("Min", [0], 0),  # length-1 lists
    ("Max", [3, 9, 1, 9], 9), ("Min", [4, 1, 1, 6], 1), ("Max", [5, 5, 5], 5),  # ties
])
def test_answers(operation, digits, expected):
    assert list_ops.answer(operation, digits) == expected


def test_generated_labels_are_right_for_every_example_and_operations_balanced():
    data = list_ops.make_examples(2003, min_length=1, max_length=6, seed=1)
    for k, text in enumerate(data.texts):
        operation, body = text.split(" ", 1)
        digits = [int(t) for t in body.strip("( )").split(" , ")]
        assert data.operations[data.operation[k]] == operation
        assert data.labels[k].item() == list_ops.answer(operation, digits), text
        assert 1 <= len(digits) <= 6 and (operation != "Second" or len(digits) >= 2)
        n_tokens = len(text.split()) + 1  # and [CLS]
        assert not data.padding[k, :n_tokens].any() and data.padding[k, n_tokens:].all()
    counts = torch.bincount(data.operation).tolist()
    assert max(counts) - min(counts) <= 1 and len(counts) == 5
    lengths = [len(t.split(" , ")) for t in data.texts]
    assert min(lengths) == 1 and max(lengths) == 6  # lengths vary over the whole range
    splits = list_ops.split(data, seed=1)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [1602, 200, 201]


# ---------------------------------------------------------------------------- model
def test_model_shapes_masks_and_attention():
    data = list_ops.make_examples(6, max_length=5, seed=0)
    torch.manual_seed(0)
    model = list_ops.ListOpsTransformer(list_ops.ListOpsConfig(context_length=list_ops.sequence_length(8),
                                                               dropout=0.0)).eval()
    logits, attention = model(data.tokens, data.padding, return_attention=True)
    assert logits.shape == (6, 10) and len(attention) == 2
    assert attention[0].shape == (6, 4, data.tokens.shape[1], data.tokens.shape[1])
    assert attention[0][data.padding[:, None, None, :].expand_as(attention[0])].abs().max() == 0  # no weight on pad
    # more padding changes nothing: the mask keeps attention off it
    padded_tokens = torch.cat([data.tokens, torch.zeros(6, 4, dtype=torch.long)], 1)
    padded_mask = torch.cat([data.padding, torch.ones(6, 4, dtype=torch.bool)], 1)
    assert torch.allclose(model(padded_tokens, padded_mask), logits, atol=1e-5)
    counts = list_ops.parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters()) > 10000


def test_without_positions_the_model_cannot_tell_first_from_last():
    """Without positional encoding the encoder sees a multiset of tokens: permuting the list
    leaves the output unchanged, so First / Second / Last are unlearnable (the ablation)."""
    forward = list_ops.make_examples(1, max_length=4, seed=0)
    tokens = ["<cls>", "First", "(", "1", ",", "5", ",", "9", ")"]
    reverse = ["<cls>", "First", "(", "9", ",", "5", ",", "1", ")"]
    ids = torch.tensor([[list_ops.TOKEN_ID[t] for t in tokens], [list_ops.TOKEN_ID[t] for t in reverse]])
    padding = torch.zeros_like(ids, dtype=torch.bool)
    for positions, same in (("none", True), ("sinusoidal", False)):
        torch.manual_seed(0)
        model = list_ops.ListOpsTransformer(list_ops.ListOpsConfig(context_length=ids.shape[1], dropout=0.0,
                                                                   positions=positions)).eval()
        logits = model(ids, padding)
        assert torch.allclose(logits[0], logits[1], atol=1e-5) == same, positions
    assert forward.tokens.shape[1] == list_ops.sequence_length(4)


def test_attention_entropy_is_zero_focused_and_one_uniform():
    focused = torch.eye(5).expand(2, 5, 5)
    uniform = torch.full((2, 5, 5), 0.2)
    assert torch.allclose(list_ops.attention_entropy(focused), torch.zeros(2), atol=1e-6)
    assert torch.allclose(list_ops.attention_entropy(uniform), torch.ones(2))


# ------------------------------------------------------------------ the experiment
def test_ci_run_learns_every_operation_and_records_everything():
    run = ex.run(named_configs=["ci"])
    run_dir = Path(os.environ["TOYLAB_RUNS_DIR"]) / str(run._id)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "COMPLETED"
    result = record["result"]
    # the replication claim at CI size: every operation learned, far above chance (0.1)
    for name in list_ops.OPERATIONS:
        assert result[f"test_acc_{name}"] >= 0.9, result
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("train.loss", "train.acc", "val.loss", "val.acc"):
        assert metrics[name]["steps"] == list(range(1, 11)), name
    assert metrics["val.acc"]["values"][result["best_epoch"] - 1] == max(metrics["val.acc"]["values"])
    assert {f"test.acc.{name}" for name in list_ops.OPERATIONS} <= set(metrics)
    for name in ("best_model.pt", "per_operation_accuracy.png", "training_curves.png", "predictions.txt",
                 *(f"attention_{op}.png" for op in list_ops.OPERATIONS)):
        assert (run_dir / name).stat().st_size > 500, name
    lines = (run_dir / "predictions.txt").read_text().splitlines()
    assert len(lines) == 20 and all(line.count(":") == 5 for line in lines)  # five top digits each
    entropy = json.loads((run_dir / "info.json").read_text())["attention_entropy"]
    assert set(entropy) == set(list_ops.OPERATIONS) and all(0 <= h <= 1 for op in entropy.values()
                                                            for layer in op for h in layer)
    # the best checkpoint reproduces the recorded test accuracy
    model = list_ops.ListOpsTransformer(list_ops.ListOpsConfig(context_length=list_ops.sequence_length(4)))
    model.load_state_dict(torch.load(run_dir / "best_model.pt", weights_only=True))
    splits = list_ops.split(list_ops.make_examples(2000, max_length=4, seed=0), seed=0)
    assert list_ops.accuracy_by_operation(model, splits["test"])["all"] == pytest.approx(result["test_acc"])
    table = analysis.list_ops.operation_accuracy(os.environ["TOYLAB_RUNS_DIR"], by=["n_examples"])
    assert table.loc[0, "n_examples"] == 2000 and table.loc[0, "seeds"] == 1


@pytest.mark.parametrize("updates, key", [({"size": "huge"}, "size"), ({"operations": ["First", "Median"]}, "operations"),
                                          ({"operations": []}, "operations"), ({"n_heads": 3}, "n_heads"),
                                          ({"max_length": 1}, "max_length"), ({"epochs": 0}, "epochs")])
def test_bad_config_is_refused_before_a_run_is_recorded(updates, key):
    with pytest.raises(harness.ConfigError, match=f"^{key}="):
        ex.run(config_updates=updates)
    assert not list(Path(os.environ["TOYLAB_RUNS_DIR"]).glob("[0-9]*"))


def test_named_sizes():
    for name, n in (("small", 1000), ("medium", 10000), ("large", 100000)):
        config = ex.run("print_config", named_configs=[name]).config
        assert (config["size"], config["n_examples"]) == (name, n)


def test_walkthrough_notebook_executes_on_a_tiny_configuration():
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(REPO / "notebooks" / "list_ops_walkthrough.ipynb", as_version=4)
    [parameters] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source = "n_examples = 300\nmax_length = 4\nepochs = 2\nlr = 3e-3\nbatch_size = 64\nseed = 0"
    NotebookClient(notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                      for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "'total':" in outputs and "First" in outputs and "{'train': 240, 'val': 30, 'test': 30}" in outputs
