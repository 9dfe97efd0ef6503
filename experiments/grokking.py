"""Grokking as representation learning: Liu et al. (2022), "Towards Understanding
Grokking: An Effective Theory of Representation Learning", arXiv 2205.10343.

Question: when does a network that learns addition from a few of the p(p+1)/2 pairs
generalise, and when does it only memorise? The paper's answer: it generalises when the
symbol representation becomes linear (RQI -> 1) before the decoder has memorised the
training pairs. One run gives the curves of Figure 2 and one cell of the phase
diagrams (Figure 6): threshold steps t_train, t_test, t_rqi and the phase.

    python experiments/grokking.py                              # the toy model, 1e4 steps
    python experiments/grokking.py with paper                   # the paper's defaults exactly
    python experiments/grokking.py with p=10 train_fraction=0.45
    python experiments/grokking.py with sacred_script           # the repository's script model
    python experiments/grokking.py with resume_from=7           # continue interrupted run 7 (same config)

The phase diagrams and the training-fraction scan are named sweeps (SWEEPS below), one run
per point, trained in blocks (``block_key``, ``train_block``: the sweeps package's hooks):

    python -m sweeps experiments/grokking.py --sweep phase_mse_quick
    python -m sweeps experiments/grokking.py --sweep phase_mse        # Figure 6, 176 runs
    python -m sweeps experiments/grokking.py --sweep phase_mse_paper_split   # the paper's own split

The paper's run itself, its split, targets and initialisation drawn as its notebook draws them:

    python experiments/grokking.py with paper draws=paper_notebook seed=58 decoder_lr=1e-4 train_steps=3000

The transformers of Power et al. and Nanda et al. are experiments/grokking_transformer.py.
"""
import json

import torch

import harness
from analysis import figures
from analysis.paper import PAPER_BUDGET, PAPER_MARGIN, SEED_RULES, published_axes
from toymodels.addition import (ACTIVATIONS, DRAWS, DTYPES, LOSSES, NOTEBOOK_SEEDS, NOTEBOOK_SHAPES,
                                NOTEBOOK_TARGET_DIM, OPTIMIZERS, REPRESENTATIONS, Objective, OptimizerSettings,
                                ToyAdditionModel, make_addition_task, n_pairs, n_train_pairs, notebook_initialise,
                                notebook_task)
from toymodels.addition_train import train
from toymodels.phases import classify_phase
from toymodels.representation import degrees_of_freedom

ex = harness.experiment("grokking")
CHUNK_STEPS = 500  # the trainer reduces metrics per chunk of steps; checkpoints fall between chunks


@ex.config
def config():
    # --- task
    p = 10  # symbols 0..p-1; samples are the pairs (i, j), i <= j, labelled i + j (2p - 1 classes)
    train_fraction = 0.8  # fraction of the p(p+1)/2 pairs used for training (rounded); the rest is the test set
    # --- model
    representation = "embedding"  # "embedding": free table (paper); "encoder": MLP over random symbol vectors
    hidden_rep_dim = 1  # dimension of each symbol's representation
    init_scale = 1.0  # the embedding table starts uniform(-0.5, 0.5) * init_scale
    symbol_rep_dim = 10  # encoder only: dimension of the fixed random symbol vectors
    encoder_width = 200  # encoder only
    encoder_depth = 3  # encoder only: number of linear layers
    decoder_width = 200
    decoder_depth = 3  # number of linear layers: hidden_rep_dim -> 200 -> 200 -> output
    activation = "tanh"  # nonlinearity of encoder and decoder
    loss = "mse"  # "mse" onto fixed random target vectors, or "cross_entropy" over the 2p - 1 sums
    # The cross-entropy notebook's loss is torch.mean over pairs x classes; Toylab's is the mean over pairs.
    ce_mean_over_classes = False  # CE: also divide by the 2p - 1 classes, as the paper (AdamW: eps x (2p - 1))
    target_dim = 30  # MSE only: dimension of the random target vector of each sum
    dtype = "float32"
    # --- optimisation (full batch; encoder_* applies to the representation, table or encoder MLP)
    optimizer = "adamw"  # "adamw": decoupled weight decay (paper); "adam": coupled L2 (repository script)
    encoder_lr = 1e-3
    decoder_lr = 1e-4
    encoder_weight_decay = 0.0
    decoder_weight_decay = 0.0
    train_steps = 10000  # the paper's figures; its defaults use 5000 and its phase diagrams 1e5
    # --- measurement
    acc_threshold = 0.9  # t_train / t_test: first step with accuracy >= this
    rqi_threshold = 0.95  # t_rqi: first step with RQI > this
    parallelogram_tolerance = 0.01  # a parallelogram is present when its mean squared closing error is below this
    phase_margin = 1000  # Delta: t_test - t_train below it is comprehension, above it grokking
    # stop once the phase is decided: t_train and t_test reached, or t_train on a split whose test sums cap
    # test accuracy below acc_threshold (memorization; phase_decider); phase sweeps
    stop_when_decided = False
    log_every = max(1, train_steps // 1000)  # metric cadence; threshold steps are logged as well
    torch_threads = 1  # the toy model is too small to gain from more threads
    seed = 0  # seeds the split, the targets and the initialisation
    # "paper_notebook": numpy and torch seeded with seed draw as the paper's phase-diagram notebooks do
    # (toymodels.addition.notebook_task): seed 58 is the published MSE and representation-lr split, 6 the CE one.
    draws = "toylab"  # how seed draws split, targets and initialisation: "toylab" or "paper_notebook"
    # --- interruption and resumption
    checkpoint_every = 5000  # steps between checkpoint.pt artifacts (0: only when interrupted); multiple of 500
    resume_from = None  # run id (or run directory) whose checkpoint.pt this run continues; None starts afresh


@ex.named_config
def paper():
    """The paper's toy-model defaults exactly: 45 of the 55 pairs, 5000 steps."""
    p = 10
    train_fraction = 45 / 55
    representation = "embedding"
    hidden_rep_dim = 1
    loss = "mse"
    target_dim = 30
    optimizer = "adamw"
    encoder_lr = 1e-3
    decoder_lr = 1e-4
    encoder_weight_decay = 0.0
    decoder_weight_decay = 0.0
    train_steps = 5000


@ex.named_config
def cross_entropy():
    """The paper's cross-entropy variant: logits over the 2p - 1 sums."""
    loss = "cross_entropy"


@ex.named_config
def embedding_2d():
    """Two-dimensional symbol embeddings, as in the paper's representation figures."""
    hidden_rep_dim = 2


@ex.named_config
def sacred_script():
    """The repository's scripts/run_toy_model.py: random symbol vectors through an encoder
    MLP, Adam with coupled L2, float64, output symbol vectors of dimension symbol_rep_dim."""
    representation = "encoder"
    symbol_rep_dim = 10
    target_dim = 10
    optimizer = "adam"
    dtype = "float64"
    encoder_lr = 1e-3
    decoder_lr = 1e-3
    train_steps = 50000


def _split_has_both_sides(config):
    return 0 < n_train_pairs(config["p"], config["train_fraction"]) < n_pairs(config["p"])


def _outside_the_notebooks(config) -> list:
    """What a draws="paper_notebook" config asks that the paper's notebooks never drew."""
    wanted = dict(NOTEBOOK_SHAPES, representation="embedding", **(
        {"target_dim": NOTEBOOK_TARGET_DIM} if config["loss"] == "mse" else {}))
    have = {key: config.get(key) for key in wanted}
    have["n_train"] = n_train_pairs(config["p"], config["train_fraction"])
    return [f"{key}={have[key]!r} (the notebooks: {value!r})" for key, value in wanted.items() if have[key] != value]


ex.config_hook(harness.checks(
    harness.choice({"representation": REPRESENTATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS,
                    "activation": tuple(ACTIVATIONS), "dtype": tuple(DTYPES), "draws": DRAWS}),
    harness.integer({"p": 2, "train_steps": 1, "hidden_rep_dim": 1, "decoder_width": 1, "decoder_depth": 1,
                     "encoder_width": 1, "encoder_depth": 1, "symbol_rep_dim": 1, "target_dim": 1, "log_every": 1,
                     "torch_threads": 1, "checkpoint_every": 0}),
    harness.boolean("stop_when_decided", "ce_mean_over_classes"),
    harness.multiple_of("checkpoint_every", CHUNK_STEPS, "checkpoints are taken between chunks of steps"),
    harness.rule("resume_from", lambda c: c["resume_from"] is None or isinstance(c["resume_from"], (int, str)),
                 "use a run id or a run directory"),
    harness.positive("encoder_lr", "decoder_lr"),
    harness.non_negative("encoder_weight_decay", "decoder_weight_decay", "init_scale", "phase_margin"),
    harness.within("train_fraction", 0, 1, what="the fraction of pairs used for training"),
    harness.rule("train_fraction", _split_has_both_sides,
                 lambda c: f"for p={c['p']} it gives {n_train_pairs(c['p'], c['train_fraction'])} of "
                           f"{n_pairs(c['p'])} pairs for training; both splits need at least one pair"),
    harness.rule("draws", lambda c: not _outside_the_notebooks(c),
                 lambda c: "the paper's notebooks drew p=10, 45 of 55 training pairs, a 1-d embedding table, "
                           "a 200-wide 3-layer decoder, MSE targets of dimension 30; here "
                           + ", ".join(_outside_the_notebooks(c)),
                 when=lambda c: c["draws"] == "paper_notebook"),
    harness.rule("ce_mean_over_classes", lambda c: c["loss"] == "cross_entropy" and c["optimizer"] == "adamw",
                 "it normalises the cross-entropy loss, through AdamW's eps: use it with loss=cross_entropy "
                 "optimizer=adamw", when=lambda c: c["ce_mean_over_classes"]),
    harness.within("acc_threshold", 0, 1, closed="high"),
    harness.within("rqi_threshold", 0, 1, closed="high"),
))


# ------------------------------------------------------------------ data and model
def build(config):
    """Task, objective, model and optimiser settings of one config: the method's parts, the
    same for a single run and for a block of a sweep."""
    seed, dtype, notebook = config["seed"], DTYPES[config["dtype"]], config["draws"] == "paper_notebook"
    if notebook:  # the split and the MSE targets from numpy, as the paper's notebooks draw them
        task, targets = notebook_task(config["p"], n_train_pairs(config["p"], config["train_fraction"]),
                                      config["loss"], config["target_dim"], seed)
    else:
        task, targets = make_addition_task(config["p"], config["train_fraction"], seed), None
    objective = Objective(config["loss"], task.n_classes, config["target_dim"], seed, dtype=dtype, targets=targets)
    torch.manual_seed(seed)
    model = ToyAdditionModel(config["p"], config["hidden_rep_dim"], objective.output_dim, config["representation"],
                             config["init_scale"], config["symbol_rep_dim"], config["encoder_width"],
                             config["encoder_depth"], config["decoder_width"], config["decoder_depth"],
                             config["activation"], seed=seed)
    if notebook:  # the decoder and the table from torch, in the notebooks' order
        notebook_initialise(model, seed, config["init_scale"])
    model = model.to(dtype)
    settings = OptimizerSettings(config["optimizer"], config["encoder_lr"], config["decoder_lr"],
                                 config["encoder_weight_decay"], config["decoder_weight_decay"])
    if config["ce_mean_over_classes"]:
        # The notebook's loss is torch.mean over pairs x classes: the cross-entropy / (2p - 1). Adam(W) with a
        # gradient c times smaller makes the update of eps x c (m / (sqrt(v) + c eps)); decoupled decay is unscaled.
        settings.eps *= task.n_classes
    return task, objective, model, settings


def split_facts(task) -> dict:
    """What the split itself allows. A test pair whose sum never occurs in training cannot
    be predicted: its target is never seen. This bounds test accuracy whatever the
    representation (the paper's "ideal accuracy" when the training set fixes the structure,
    dof = 2)."""
    train_sums = set(task.labels[task.train_mask].tolist())
    test_sums = task.labels[~task.train_mask].tolist()
    return {"n_train": int(task.train_mask.sum()), "n_test": len(test_sums),
            "dof": degrees_of_freedom(task.train_pairs.numpy(), task.p),
            "reachable_test_acc": sum(s in train_sums for s in test_sums) / len(test_sums)}


def phase_decider(tasks, acc_threshold):
    """stop_when for phase sweeps (stop_when_decided): model k's phase is decided once t_train
    and t_test are both known, or once t_train is known on a split that caps test accuracy
    below the threshold (split_facts: test sums never among the training sums). Those test
    pairs are never trained towards their targets, so the run is memorization; a chance hit
    on an untrained target could in principle break that, and none did: seed 0's MSE diagram
    at the full budget and under this rule has the same phase in all 176 cells (README)."""
    capped = [split_facts(task)["reachable_test_acc"] < acc_threshold for task in tasks]

    def decided(k, outcome) -> bool:
        return outcome.t_train is not None and (outcome.t_test is not None or capped[k])
    return decided


def stop_reason(outcome, split, acc_threshold):
    """Why phase_decider stopped the run (recorded with the result), or None if it ran to the budget."""
    if not outcome.stopped_early:
        return None
    if outcome.t_test is not None:
        return "t_train and t_test reached: the phase is decided (stop_when_decided)"
    return (f"t_train reached and the split caps test accuracy at {split['reachable_test_acc']:.2f} < "
            f"{acc_threshold}: memorization is decided (stop_when_decided)")


def train_models(configs, on_log, progress=False, resume=None, on_checkpoint=None):
    """Train the models of ``configs`` (one, or a block of a sweep) in one batched loop."""
    first = configs[0]
    tasks, objectives, models, settings = (list(parts) for parts in zip(*(build(c) for c in configs)))
    outcomes = train(models, tasks, objectives, settings, first["train_steps"], first["log_every"], on_log=on_log,
                     acc_threshold=first["acc_threshold"], rqi_threshold=first["rqi_threshold"],
                     rqi_tolerance=first["parallelogram_tolerance"], chunk_steps=CHUNK_STEPS,
                     stop_when=phase_decider(tasks, first["acc_threshold"]) if first["stop_when_decided"] else None,
                     resume=resume, on_checkpoint=on_checkpoint, progress=progress)
    return tasks, models, outcomes


# ------------------------------------------------------------------ sweeps
# Named sweeps (python -m sweeps experiments/grokking.py --sweep NAME). The *_quick variants
# are CI-sized. Phase sweeps stop a run once its phase is decided (stop_when_decided: both
# thresholds reached, or train on a split that caps test accuracy); the others run to the budget.
PAPER_DECODER_LRS = [float(f"{10 ** (-5 + 3 * k / 15):.4g}") for k in range(16)]  # 10^linspace(-5, -2, 16)
PAPER_REPRESENTATION_LRS = [float(f"{10 ** (-5 + 3 * k / 12):.4g}") for k in range(13)]  # 10^linspace(-5, -2, 13)
# The single-seed diagrams use seed 2, whose split of the paper's 45 pairs has dof = 2 and
# every test sum among the training sums. Seed 0's split leaves 2 of its 10 test sums out of
# training: its test accuracy can never reach 0.9, so every cell would be memorization or confusion.
PHASE_SEED = 2
# The published diagrams (analysis/reference/liu2022_phase_diagrams.json), their grids exactly
# as published, budget 1e5 and margin 1e3, on the paper's own split (*_paper_split: the
# notebook's draws with its seed, NOTEBOOK_SEEDS) and over seeds (*_seeds).
# The seed rule, fixed before any result: seeds 0..9 (SEEDS), whatever their splits. The
# alternative rule, the first ten seeds whose split leaves every test sum reachable (a
# property of the split, known before training; analysis.paper.reachable_seeds), is
# REACHABLE_SEEDS (*_seeds_reachable; run it with --name of the *_seeds sweep to train only
# the seeds the first rule has not). Neither is chosen for its agreement with the paper.
SEEDS = SEED_RULES["0..9"]
REACHABLE_SEEDS = SEED_RULES["reachable"]


def _published(diagram, named_configs, seeds=None, **config):
    """A sweep over a published grid (its values exactly), budget 1e5, margin 1e3."""
    rows_key, rows, columns_key, columns = published_axes(diagram)
    sweep = {"grid": {rows_key: rows, columns_key: columns}, "named_configs": named_configs,
             "config": {"train_steps": PAPER_BUDGET, "phase_margin": PAPER_MARGIN, "stop_when_decided": True, **config}}
    return sweep if seeds is None else dict(sweep, seeds=seeds)


PAPER_SPLIT = {"draws": "paper_notebook"}
PAPER_CE = {"ce_mean_over_classes": True}  # the cross-entropy notebook's loss is a mean over the classes too


SWEEPS = {
    "phase_mse": {  # Figure 6 (MSE): 16 x 11 points of up to 1e5 steps
        "grid": {"decoder_lr": PAPER_DECODER_LRS, "decoder_weight_decay": list(range(11))},
        "named_configs": ["paper"],
        "config": {"train_steps": 100000, "phase_margin": 1000, "stop_when_decided": True, "seed": PHASE_SEED},
    },
    "phase_mse_quick": {  # the landmarks of Figure 6 at a tenth of the budget, three seeds
        "grid": {"decoder_lr": [1e-5, 1e-4, 1e-3, 1e-2], "decoder_weight_decay": [0, 10]},
        "named_configs": ["paper"],
        "config": {"train_steps": 10000, "phase_margin": 1000, "stop_when_decided": True},
        "seeds": [2, 3, 4],
    },
    "phase_representation": {  # Figure 6 (representation lr x decoder lr): 13 x 13 points
        "grid": {"encoder_lr": PAPER_REPRESENTATION_LRS, "decoder_lr": PAPER_REPRESENTATION_LRS},
        "named_configs": ["paper"],
        "config": {"train_steps": 100000, "phase_margin": 1000, "stop_when_decided": True, "seed": PHASE_SEED},
    },
    "phase_representation_quick": {
        "grid": {"encoder_lr": [1e-5, 1e-3, 1e-2], "decoder_lr": [1e-5, 1e-4, 1e-2]},
        "named_configs": ["paper"],
        "config": {"train_steps": 10000, "phase_margin": 1000, "stop_when_decided": True, "seed": PHASE_SEED},
    },
    "phase_mse_paper_split": _published("mse", ["paper"], **PAPER_SPLIT, seed=NOTEBOOK_SEEDS["mse"]),
    "phase_mse_seeds": _published("mse", ["paper"], SEEDS),
    "phase_mse_seeds_reachable": _published("mse", ["paper"], REACHABLE_SEEDS),
    "phase_cross_entropy_paper_split": _published("cross_entropy", ["paper", "cross_entropy"], **PAPER_SPLIT,
                                                  **PAPER_CE, seed=NOTEBOOK_SEEDS["cross_entropy"]),
    "phase_cross_entropy_seeds": _published("cross_entropy", ["paper", "cross_entropy"], SEEDS, **PAPER_CE),
    "phase_cross_entropy_seeds_reachable": _published("cross_entropy", ["paper", "cross_entropy"], REACHABLE_SEEDS,
                                                      **PAPER_CE),
    "phase_representation_paper_split": _published("representation_lr", ["paper"], **PAPER_SPLIT,
                                                   seed=NOTEBOOK_SEEDS["representation_lr"]),
    "phase_representation_seeds": _published("representation_lr", ["paper"], SEEDS),
    "phase_representation_seeds_reachable": _published("representation_lr", ["paper"], REACHABLE_SEEDS),
    # CI-sized: 4 x 2 published MSE cells, the rule's first three seeds, 1e4 steps; compare it with
    # analysis.paper.compare(table, "mse", budget=10000), the published steps a 1e4 budget would see
    "phase_mse_seeds_quick": {
        "grid": {"decoder_lr": [published_axes("mse")[1][k] for k in (0, 5, 10, 15)], "decoder_weight_decay": [0, 10]},
        "named_configs": ["paper"],
        "config": {"train_steps": 10000, "phase_margin": PAPER_MARGIN, "stop_when_decided": True},
        "seeds": SEEDS[:3],
    },
    "fraction_scan": {  # the critical training fraction (Figure 5): accuracy and RQI against the fraction
        "grid": {"train_fraction": [round(0.1 * k, 2) for k in range(1, 10)]},
        "named_configs": ["paper"],
        "config": {"train_steps": 10000},
        "seeds": 10,
    },
    "fraction_scan_quick": {  # 5000 steps: at 2000 most runs had not generalised yet, whatever the fraction
        "grid": {"train_fraction": [0.2, 0.4, 0.6, 0.8]},
        "named_configs": ["paper"],
        "config": {"train_steps": 5000},
        "seeds": 3,
    },
}
SWEEP_RESULTS = ("phase",)  # what the sweep's summary shows per point, and counts

# Keys a block of models trained together may differ in (each model has its own split,
# initialisation, learning rates and weight decays); every other key must be equal.
PER_MODEL_KEYS = {"seed", "train_fraction", "init_scale", "encoder_lr", "decoder_lr", "encoder_weight_decay",
                  "decoder_weight_decay", "phase_margin", "checkpoint_every"}


def block_key(config):
    """Sweep hook: configs with the same key train together in ``train_block``; None: alone."""
    if config["resume_from"] is not None:
        return None
    return json.dumps({k: v for k, v in config.items() if k not in PER_MODEL_KEYS}, sort_keys=True)


def train_block(configs) -> list:
    """Sweep hook: train several configs together, one batched forward and backward per step.
    Returns one trained share per config; ``main(share)`` records it as that config's run."""
    torch.set_num_threads(configs[0]["torch_threads"])
    logs = [[] for _ in configs]
    tasks, models, outcomes = train_models(configs, on_log=lambda k, step, metrics: logs[k].append((step, metrics)))
    return [{"task": task, "model": model, "outcome": outcome, "log": log, "block_size": len(configs)}
            for task, model, outcome, log in zip(tasks, models, outcomes, logs)]


# ------------------------------------------------------------------ the run
@ex.automain
def main(share=None, _run=None, _config=None, train_steps=None, phase_margin=None, torch_threads=None,
         checkpoint_every=None, resume_from=None):
    """Train (or, in a sweep's block, take the share ``train_block`` trained), then record."""
    torch.set_num_threads(torch_threads)
    curves = harness.Curves(_run)
    if share is None:
        checkpoints = harness.Checkpoints(_run, every=checkpoint_every, last_step=train_steps)
        with checkpoints.kept_on_interrupt():
            [task], [model], [outcome] = train_models(
                [_config], on_log=lambda _, step, metrics: curves.log(step, metrics),
                progress=harness.on_terminal(), resume=harness.resume_state(_run, resume_from),
                on_checkpoint=checkpoints.update)
    else:
        task, model, outcome = share["task"], share["model"], share["outcome"]
        for step, metrics in share["log"]:
            curves.log(step, metrics)
        _run.info["trained_in_block_of"] = share["block_size"]

    split = split_facts(task)
    result = {
        "t_train": outcome.t_train, "t_test": outcome.t_test, "t_rqi": outcome.t_rqi,
        "phase": classify_phase(outcome.t_train, outcome.t_test, train_steps, phase_margin),
        "final_train_acc": outcome.final["train.acc"], "final_test_acc": outcome.final["test.acc"],
        "final_rqi": outcome.final["rqi"], "steps": outcome.steps, "stopped_early": outcome.stopped_early,
        "stop_reason": stop_reason(outcome, split, _config["acc_threshold"]), **split,
    }
    _run.info.update(result)

    thresholds = {"t_train": outcome.t_train, "t_test": outcome.t_test, "t_rqi": outcome.t_rqi}
    harness.save_figure(_run, figures.training_curves(curves, thresholds, f"phase: {result['phase']}"),
                        "training_curves.png")
    embedding = model.symbol_representations().detach().double().numpy()
    harness.save_figure(_run, figures.representation(embedding, "learned symbol representation"),
                        "representation.png")
    harness.save_torch(_run, model.state_dict(), "model.pt")
    reachable = ("every test sum appears in training" if split["reachable_test_acc"] == 1 else
                 f"at most {split['reachable_test_acc']:.2f} for this split: some test sums never appear in training")
    harness.report(_run, f"phase {result['phase']}: t_train={outcome.t_train} t_test={outcome.t_test} "
                         f"t_rqi={outcome.t_rqi}; final train acc {result['final_train_acc']:.3f}, test acc "
                         f"{result['final_test_acc']:.3f} ({reachable}), RQI {result['final_rqi']:.3f}")
    return result
