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

The phase diagrams and the training-fraction scan are named sweeps (SWEEPS below), one run per point:

    python -m experiments.sweep experiments/grokking.py --sweep phase_mse_quick
    python -m experiments.sweep experiments/grokking.py --sweep phase_mse        # Figure 6, 176 runs

With ``model="transformer"`` the same question is asked of the transformers of Power et
al. (2022, arXiv 2201.02177) and Nanda et al. (2023, arXiv 2301.05217) on modular
arithmetic (same metrics, threshold steps and phases; RQI is specific to the toy model):

    python experiments/grokking.py with transformer_small       # groks on one CPU core in ~30 s
    python experiments/grokking.py with power                   # division mod 97: a GPU run
    python experiments/grokking.py with nanda                   # addition mod 113: a GPU run
"""
import io
import json
import tempfile
from pathlib import Path

import observers  # first: it quiets Sacred's import-time warning

import torch
from sacred import Experiment

from analysis import figures
from toymodels import transformer
from toymodels.grokking import (ACTIVATIONS, DTYPES, LOSSES, OPTIMIZERS, REPRESENTATIONS, Objective,
                                OptimizerSettings, ToyAdditionModel, make_addition_task, n_pairs, n_train_pairs,
                                train)
from toymodels.modular import OPERATIONS, SEQUENCES, is_prime, make_modular_task, n_examples, n_train_examples
from toymodels.phases import classify_phase
from toymodels.representation import degrees_of_freedom

ex = observers.attach(Experiment("grokking"))
CHUNK_STEPS = 500  # the trainer reduces metrics per chunk of steps; checkpoints fall between chunks


@ex.config
def config():
    model = "toy"  # "toy": Liu et al.'s toy model on i + j; "transformer": a transformer on a op b mod p
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
    stop_when_decided = False  # stop once t_train and t_test are both reached (the phase is decided); phase sweeps
    log_every = max(1, train_steps // 1000)  # metric cadence; threshold steps are logged as well
    torch_threads = 1  # the toy model is too small to gain from more threads
    seed = 0  # seeds the split, the targets and the initialisation
    # --- interruption and resumption
    checkpoint_every = 5000  # steps between checkpoint.pt artifacts (0: only when interrupted); multiple of 500
    resume_from = None  # run id (or run directory) whose checkpoint.pt this run continues; None starts afresh
    # --- transformer (model="transformer"; p, train_fraction, train_steps, dtype, seed and the
    # measurement keys above apply too; defaults are Nanda et al.'s model and optimiser)
    operation = "addition"  # a op b mod p: addition, subtraction, multiplication, division (b != 0, p prime)
    sequence = "nanda"  # tokens: "power" <eos> a op b = c <eos>; "nanda" [a, b, =]; the answer is read at "="
    n_layers = 1  # transformer blocks
    d_model = 128  # residual stream width
    n_heads = 4  # attention heads of d_model / n_heads each
    d_mlp = 512  # hidden width of each block's ReLU MLP
    layer_norm = False  # True: pre-norm LayerNorm in each block and before the unembedding (Power)
    positions = "learned"  # position encoding: "learned" or "sinusoidal" (fixed, Power)
    embedding_std = d_model ** -0.5  # token (and learned position) embeddings start N(0, embedding_std^2)
    lr = 1e-3  # AdamW learning rate, betas (0.9, 0.98)
    weight_decay = 1.0  # AdamW decoupled weight decay
    warmup_steps = 10  # linear learning-rate warmup: lr * min(1, (step + 1) / warmup_steps)
    batch_size = 0  # examples per step, shuffled each epoch; 0: full batch
    eval_every = 1  # metrics on the whole train and test splits every this many steps (1: exact thresholds)
    device = "auto"  # "auto": cuda when available, else cpu; or "cpu", "cuda"


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


@ex.named_config
def power():
    """Power et al. (2022): 2 layers, d_model 128, 4 heads, feed-forward 512 ReLU, LayerNorm,
    sinusoidal positions; AdamW lr 1e-3 (10-step warmup), weight decay 1; division mod 97
    with half the table for training, minibatches of min(512, N_train / 2), 1e5 steps (a GPU run)."""
    model = "transformer"
    p = 97
    operation = "division"
    sequence = "power"
    train_fraction = 0.5
    n_layers = 2
    layer_norm = True
    positions = "sinusoidal"
    embedding_std = 1.0  # PyTorch's default embedding initialisation
    batch_size = min(512, n_train_examples(p, operation, train_fraction) // 2)  # 512 for division mod 97
    train_steps = 100000


@ex.named_config
def nanda():
    """Nanda et al. (2023): the default transformer (1 layer, 4 heads of 32, d_mlp 512, no
    LayerNorm, learned positions; AdamW lr 1e-3, weight decay 1, full batch) on addition
    mod 113 with 30% of the pairs for training, 40k steps (epochs; a GPU run)."""
    model = "transformer"
    p = 113
    operation = "addition"
    sequence = "nanda"
    train_fraction = 0.3
    train_steps = 40000


@ex.named_config
def transformer_small():
    """Nanda's transformer on addition mod 31 with 70% of the pairs, CI-sized: it fits the
    training pairs within ~50 steps and reaches 0.9 test accuracy 150-350 steps later
    (seeds 0-4), in well under a minute on one CPU core."""
    model = "transformer"
    p = 31
    train_fraction = 0.7
    lr = 3e-3  # 3x the papers' rate: at 1e-3 this size takes several thousand steps to generalise
    train_steps = 1000
    phase_margin = 100  # a tenth of the budget (the paper's 1e3 is a hundredth of 1e5)


@ex.config_hook
def validate(config, command_name, logger):
    """Refuse values the experiment cannot run, before any run is recorded."""
    choices = {"representation": REPRESENTATIONS, "loss": LOSSES, "optimizer": OPTIMIZERS,
               "activation": tuple(ACTIVATIONS), "dtype": tuple(DTYPES)}
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise observers.ConfigError(f"{key}={config[key]!r} is not allowed: use one of {', '.join(allowed)}")
    integers = {"p": 2, "train_steps": 1, "hidden_rep_dim": 1, "decoder_width": 1, "decoder_depth": 1,
                "encoder_width": 1, "encoder_depth": 1, "symbol_rep_dim": 1, "target_dim": 1, "log_every": 1,
                "torch_threads": 1, "checkpoint_every": 0}
    for key, minimum in integers.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise observers.ConfigError(f"{key}={value!r} is not allowed: {key} must be an integer >= {minimum}")
    if not isinstance(config["stop_when_decided"], bool):
        raise observers.ConfigError(f"stop_when_decided={config['stop_when_decided']!r} is not allowed: use true or "
                                    "false")
    if config["checkpoint_every"] % CHUNK_STEPS:
        raise observers.ConfigError(f"checkpoint_every={config['checkpoint_every']!r} is not allowed: it must be a "
                                    f"multiple of {CHUNK_STEPS} (checkpoints are taken between chunks of steps)")
    if config["resume_from"] is not None and not isinstance(config["resume_from"], (int, str)):
        raise observers.ConfigError(f"resume_from={config['resume_from']!r} is not allowed: use a run id or a "
                                    "run directory")
    for key in ("encoder_lr", "decoder_lr"):
        if not config[key] > 0:
            raise observers.ConfigError(f"{key}={config[key]!r} is not allowed: {key} must be > 0")
    for key in ("encoder_weight_decay", "decoder_weight_decay", "init_scale", "phase_margin"):
        if not config[key] >= 0:
            raise observers.ConfigError(f"{key}={config[key]!r} is not allowed: {key} must be >= 0")
    fraction, p = config["train_fraction"], config["p"]
    if not 0 < fraction < 1:
        raise observers.ConfigError(f"train_fraction={fraction!r} is not allowed: it must be between 0 and 1 "
                                    "(exclusive), the fraction of pairs used for training")
    n_train = n_train_pairs(p, fraction)
    if not 0 < n_train < n_pairs(p):
        raise observers.ConfigError(f"train_fraction={fraction!r} is not allowed for p={p}: it gives {n_train} of "
                                    f"{n_pairs(p)} pairs for training; both splits need at least one pair")
    for key in ("acc_threshold", "rqi_threshold"):
        if not 0 < config[key] <= 1:
            raise observers.ConfigError(f"{key}={config[key]!r} is not allowed: {key} must be in (0, 1]")
    validate_transformer(config)
    return {}


def validate_transformer(config):
    """The transformer keys (checked whatever the model, so a typo never waits for a switch)."""
    choices = {"model": ("toy", "transformer"), "operation": tuple(OPERATIONS), "sequence": SEQUENCES,
               "positions": transformer.POSITIONS, "device": transformer.DEVICES}
    for key, allowed in choices.items():
        if config[key] not in allowed:
            raise observers.ConfigError(f"{key}={config[key]!r} is not allowed: use one of {', '.join(allowed)}")
    integers = {"n_layers": 1, "d_model": 1, "n_heads": 1, "d_mlp": 1, "warmup_steps": 0, "batch_size": 0,
                "eval_every": 1}
    for key, minimum in integers.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise observers.ConfigError(f"{key}={value!r} is not allowed: {key} must be an integer >= {minimum}")
    if config["d_model"] % config["n_heads"]:
        raise observers.ConfigError(f"n_heads={config['n_heads']!r} is not allowed: it must divide "
                                    f"d_model={config['d_model']}")
    if not isinstance(config["layer_norm"], bool):
        raise observers.ConfigError(f"layer_norm={config['layer_norm']!r} is not allowed: use true or false")
    if not config["lr"] > 0:
        raise observers.ConfigError(f"lr={config['lr']!r} is not allowed: lr must be > 0")
    for key in ("weight_decay", "embedding_std"):
        if not config[key] >= 0:
            raise observers.ConfigError(f"{key}={config[key]!r} is not allowed: {key} must be >= 0")
    if config["log_every"] % config["eval_every"]:
        raise observers.ConfigError(f"eval_every={config['eval_every']!r} is not allowed: it must divide "
                                    f"log_every={config['log_every']}")
    if config["device"] == "cuda" and not torch.cuda.is_available():
        raise observers.ConfigError("device='cuda' is not allowed: no CUDA device here; use auto or cpu")
    if config["model"] != "transformer":
        return
    p, operation, fraction = config["p"], config["operation"], config["train_fraction"]
    if operation == "division" and not is_prime(p):
        raise observers.ConfigError(f"p={p!r} is not allowed with operation='division': p must be prime")
    n_train = n_train_examples(p, operation, fraction)
    if not 0 < n_train < n_examples(p, operation):
        raise observers.ConfigError(f"train_fraction={fraction!r} is not allowed for p={p}: it gives {n_train} of "
                                    f"{n_examples(p, operation)} examples for training; both splits need one")
    if config["batch_size"] > n_train:
        raise observers.ConfigError(f"batch_size={config['batch_size']!r} is not allowed: at most the {n_train} "
                                    "training examples (0: full batch)")


# ------------------------------------------------------------------ data and model
@ex.capture
def build_task(p, train_fraction, seed):
    return make_addition_task(p, train_fraction, seed)


@ex.capture
def build_objective(task, loss, target_dim, dtype, seed):
    return Objective(loss, task.n_classes, target_dim, seed, dtype=DTYPES[dtype])


@ex.capture
def build_model(output_dim, p, hidden_rep_dim, representation, init_scale, symbol_rep_dim, encoder_width,
                encoder_depth, decoder_width, decoder_depth, activation, dtype, seed):
    torch.manual_seed(seed)
    model = ToyAdditionModel(p, hidden_rep_dim, output_dim, representation, init_scale, symbol_rep_dim,
                             encoder_width, encoder_depth, decoder_width, decoder_depth, activation, seed=seed)
    return model.to(DTYPES[dtype])


@ex.capture
def optimizer_settings(optimizer, encoder_lr, decoder_lr, encoder_weight_decay, decoder_weight_decay):
    return OptimizerSettings(optimizer, encoder_lr, decoder_lr, encoder_weight_decay, decoder_weight_decay)


@ex.capture
def load_checkpoint(_run, resume_from):
    """The training state saved by run ``resume_from`` (None: start afresh); the link to
    that run goes into this run's info."""
    if resume_from is None:
        return None
    state = torch.load(io.BytesIO(observers.read_artifact(resume_from, "checkpoint.pt")), weights_only=True)
    _run.info["resumed_from"] = {"run": resume_from, "step": state["next_step"]}
    return state


@ex.capture
def build_modular_task(p, operation, train_fraction, seed, sequence):
    return make_modular_task(p, operation, train_fraction, seed, sequence)


@ex.capture
def build_transformer(task, n_layers, d_model, n_heads, d_mlp, layer_norm, positions, embedding_std, dtype, seed):
    torch.manual_seed(seed)
    config = transformer.TransformerConfig(task.vocab_size, task.n_outputs, task.context_length, n_layers, d_model,
                                           n_heads, d_mlp, layer_norm, positions, embedding_std)
    return transformer.Transformer(config).to(DTYPES[dtype])


@ex.capture
def transformer_settings(train_steps, lr, weight_decay, warmup_steps, batch_size, eval_every):
    return transformer.TrainSettings(train_steps, lr, weight_decay, warmup_steps=warmup_steps,
                                     batch_size=batch_size, eval_every=eval_every)


@ex.capture
def train_transformer(_run, train_steps, log_every, acc_threshold, phase_margin, device, seed):
    """The transformer runs: same metrics (no RQI), threshold steps, phase and artifacts."""
    task = build_modular_task()
    model = build_transformer(task)
    curves = observers.Curves(_run)
    device = transformer.select_device(device)
    outcome = transformer.train(model, task, transformer_settings(), log_every, on_log=curves.log,
                                acc_threshold=acc_threshold, device=device, seed=seed,
                                progress=observers.on_terminal())
    result = {
        "t_train": outcome.t_train, "t_test": outcome.t_test,
        "phase": classify_phase(outcome.t_train, outcome.t_test, train_steps, phase_margin),
        "final_train_acc": outcome.final["train.acc"], "final_test_acc": outcome.final["test.acc"],
        "steps": outcome.steps, "n_train": int(task.train_mask.sum()), "n_test": int((~task.train_mask).sum()),
        "device": str(device),
    }
    _run.info.update(result)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        thresholds = {"t_train": outcome.t_train, "t_test": outcome.t_test}
        title = f"{task.operation} mod {task.p}, phase: {result['phase']}"
        _run.add_artifact(figures.save(figures.training_curves(curves, thresholds, title),
                                       tmp / "training_curves.png"), "training_curves.png")
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp / "model.pt")
        _run.add_artifact(str(tmp / "model.pt"), "model.pt")

    print(f"run {_run._id}: {observers.describe(_run)}")
    print(f"phase {result['phase']}: t_train={outcome.t_train} t_test={outcome.t_test}; final train acc "
          f"{result['final_train_acc']:.3f}, test acc {result['final_test_acc']:.3f} ({device})")
    return result


# ------------------------------------------------------------------ sweeps
# Named sweeps for experiments/sweep.py (python -m experiments.sweep experiments/grokking.py
# --sweep NAME). The *_quick variants are CI-sized. Phase sweeps stop a run once both
# thresholds are reached (stop_when_decided); a run that cannot decide early runs to its budget.
PAPER_DECODER_LRS = [float(f"{10 ** (-5 + 3 * k / 15):.4g}") for k in range(16)]  # 10^linspace(-5, -2, 16)
PAPER_REPRESENTATION_LRS = [float(f"{10 ** (-5 + 3 * k / 12):.4g}") for k in range(13)]  # 10^linspace(-5, -2, 13)
# The single-seed diagrams use seed 2, whose split of the paper's 45 pairs has dof = 2 and
# every test sum among the training sums. Seed 0's split leaves 2 of its 10 test sums out of
# training: its test accuracy can never reach 0.9, so every cell would be memorization or confusion.
PHASE_SEED = 2
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
    "fraction_scan": {  # the critical training fraction (Figure 5): accuracy and RQI against the fraction
        "grid": {"train_fraction": [round(0.1 * k, 2) for k in range(1, 10)]},
        "named_configs": ["paper"],
        "config": {"train_steps": 10000},
        "seeds": 10,
    },
    "fraction_scan_quick": {  # at 2000 steps most runs have not generalised yet, whatever the fraction
        "grid": {"train_fraction": [0.2, 0.4, 0.6, 0.8]},
        "named_configs": ["paper"],
        "config": {"train_steps": 5000},
        "seeds": 3,
    },
}

# Keys a block of models trained together may differ in (each model has its own split,
# initialisation, learning rates and weight decays); every other key must be equal.
PER_MODEL_KEYS = {"seed", "train_fraction", "init_scale", "encoder_lr", "decoder_lr", "encoder_weight_decay",
                  "decoder_weight_decay", "phase_margin", "checkpoint_every"}
_BLOCK_TRAINED: dict = {}  # config fingerprint -> the training train_block did for it


def block_signature(config) -> str | None:
    """Configs with the same signature can be trained together by ``train_block``; None: train alone."""
    if config["model"] != "toy" or config["resume_from"] is not None:
        return None
    return json.dumps({k: v for k, v in config.items() if k not in PER_MODEL_KEYS}, sort_keys=True)


def _fingerprint(config) -> str:
    return json.dumps(dict(config), sort_keys=True)


def _with_config(builder, config, *args):
    """A captured builder called with its arguments from ``config`` (a block builds many
    configs in one process, outside any run)."""
    names = builder.signature.arguments[len(args):]
    return builder(*args, **{name: config[name] for name in names if name in config})


def build_toy(config):
    """Task, objective, model and optimiser settings of one toy-model config."""
    task = _with_config(build_task, config)
    objective = _with_config(build_objective, config, task)
    model = _with_config(build_model, config, objective.output_dim)
    return task, objective, model, _with_config(optimizer_settings, config)


def phase_decided(_, outcome) -> bool:
    """stop_when for phase sweeps: once t_train and t_test are known the phase is too."""
    return outcome.t_train is not None and outcome.t_test is not None


STOP_REASON = "t_train and t_test reached: the phase is decided (stop_when_decided)"


def train_block(configs) -> None:
    """Train the toy models of several configs (equal ``block_signature``) together, one
    batched forward and backward per step; the next run of main with one of these configs
    records its share (metrics, threshold steps, model) instead of training again."""
    first = configs[0]
    torch.set_num_threads(first["torch_threads"])
    built = [build_toy(config) for config in configs]
    logs = [[] for _ in configs]
    tasks, objectives, models, settings = (list(parts) for parts in zip(*built))
    outcomes = train(models, tasks, objectives, settings, first["train_steps"], first["log_every"],
                     on_log=lambda k, step, metrics: logs[k].append((step, metrics)),
                     acc_threshold=first["acc_threshold"], rqi_threshold=first["rqi_threshold"],
                     rqi_tolerance=first["parallelogram_tolerance"], chunk_steps=CHUNK_STEPS,
                     stop_when=phase_decided if first["stop_when_decided"] else None, progress=False)
    for config, model, outcome, log in zip(configs, models, outcomes, logs):
        _BLOCK_TRAINED[_fingerprint(config)] = {"model": model, "outcome": outcome, "log": log,
                                                "block_size": len(configs)}


@ex.automain
def main(_run, _config, train_steps, log_every, acc_threshold, rqi_threshold, parallelogram_tolerance, phase_margin,
         stop_when_decided, torch_threads, checkpoint_every):
    torch.set_num_threads(torch_threads)
    if _config["model"] == "transformer":
        return train_transformer(_run)
    task, objective, model, settings = build_toy(_config)
    # A test pair whose sum never occurs in training cannot be predicted: its target is
    # never seen. This bounds test accuracy whatever the representation (the paper's
    # "ideal accuracy" when the training set fixes the structure, dof = 2).
    train_sums = set(task.labels[task.train_mask].tolist())
    test_sums = task.labels[~task.train_mask].tolist()
    split = {"n_train": int(task.train_mask.sum()), "n_test": len(test_sums),
             "dof": degrees_of_freedom(task.train_pairs.numpy(), task.p),
             "reachable_test_acc": sum(s in train_sums for s in test_sums) / len(test_sums)}

    curves = observers.Curves(_run)

    def log(_, step, metrics):  # the trainer's callback names the model: this run trains one
        curves.log(step, metrics)

    latest = {}  # the newest checkpoint state, saved as an artifact at the cadence and on interruption

    def save_checkpoint(state):
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / "checkpoint.pt")
            _run.add_artifact(str(Path(tmp) / "checkpoint.pt"), "checkpoint.pt")

    def on_checkpoint(state):
        latest["state"] = state
        if checkpoint_every and state["next_step"] % checkpoint_every == 0 and state["next_step"] < train_steps:
            save_checkpoint(state)

    trained = _BLOCK_TRAINED.pop(_fingerprint(_config), None)
    if trained is not None:  # trained by train_block with other points of a sweep: record this one's share
        model, outcome = trained["model"], trained["outcome"]
        for step, metrics in trained["log"]:
            log(0, step, metrics)
        _run.info["trained_in_block_of"] = trained["block_size"]
    else:
        try:
            [outcome] = train(model, task, objective, settings, train_steps, log_every, on_log=log,
                              acc_threshold=acc_threshold, rqi_threshold=rqi_threshold,
                              rqi_tolerance=parallelogram_tolerance, chunk_steps=CHUNK_STEPS,
                              stop_when=phase_decided if stop_when_decided else None,
                              resume=load_checkpoint(), on_checkpoint=on_checkpoint,
                              progress=observers.on_terminal())
        except BaseException:  # interrupted (SIGINT, SIGTERM) or failed: keep where training got to
            if "state" in latest:
                save_checkpoint(latest["state"])
            raise

    result = {
        "t_train": outcome.t_train, "t_test": outcome.t_test, "t_rqi": outcome.t_rqi,
        "phase": classify_phase(outcome.t_train, outcome.t_test, train_steps, phase_margin),
        "final_train_acc": outcome.final["train.acc"], "final_test_acc": outcome.final["test.acc"],
        "final_rqi": outcome.final["rqi"], "steps": outcome.steps, "stopped_early": outcome.stopped_early,
        "stop_reason": STOP_REASON if outcome.stopped_early else None, **split,
    }
    _run.info.update(result)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        thresholds = {"t_train": outcome.t_train, "t_test": outcome.t_test, "t_rqi": outcome.t_rqi}
        title = f"phase: {result['phase']}"
        _run.add_artifact(figures.save(figures.training_curves(curves, thresholds, title),
                                       tmp / "training_curves.png"), "training_curves.png")
        embedding = model.symbol_representations().detach().double().numpy()
        _run.add_artifact(figures.save(figures.representation(embedding, "learned symbol representation"),
                                       tmp / "representation.png"), "representation.png")
        torch.save(model.state_dict(), tmp / "model.pt")
        _run.add_artifact(str(tmp / "model.pt"), "model.pt")

    print(f"run {_run._id}: {observers.describe(_run)}")
    print(f"phase {result['phase']}: t_train={outcome.t_train} t_test={outcome.t_test} t_rqi={outcome.t_rqi}; "
          f"final train acc {result['final_train_acc']:.3f}, test acc {result['final_test_acc']:.3f} "
          f"(at most {split['reachable_test_acc']:.2f} for this split), RQI {result['final_rqi']:.3f}")
    return result
