"""Grokking in transformers on modular arithmetic: Power et al. (2022), "Grokking:
Generalization Beyond Overfitting on Small Algorithmic Datasets", arXiv 2201.02177, and
Nanda et al. (2023), "Progress measures for grokking via mechanistic interpretability",
arXiv 2301.05217.

Question: trained on a fraction of the table of a op b mod p, does a small transformer
generalise long after it has fitted the training pairs? Same measurements as the toy model
(experiments/grokking.py): threshold steps t_train, t_test and the phase (RQI belongs to
the toy model). One run gives the train/test accuracy curves of Power et al.'s Figure 1.

    python experiments/grokking_transformer.py with small     # groks on one CPU core in ~30 s
    python experiments/grokking_transformer.py with cpu_grokking   # delayed generalisation on one CPU core
    python experiments/grokking_transformer.py with power     # division mod 97: a GPU run
    python experiments/grokking_transformer.py with nanda     # addition mod 113: a GPU run
    python experiments/grokking_transformer.py with nanda device=cpu torch_threads=2
"""
import torch

import harness
from analysis import figures
from toymodels import transformer
from toymodels.addition import DTYPES
from toymodels.modular import OPERATIONS, SEQUENCES, is_prime, make_modular_task, n_examples, n_train_examples
from toymodels.phases import classify_phase

ex = harness.experiment("grokking_transformer")


@ex.config
def config():
    # --- task: a op b mod p (defaults: Nanda et al.'s model and optimiser)
    p = 113  # modulus
    operation = "addition"  # addition, subtraction, multiplication, division (b != 0, p prime)
    train_fraction = 0.3  # random fraction of all pairs used for training (drawn from seed); the rest is the test set
    sequence = "nanda"  # tokens: "power" <eos> a op b = c <eos>; "nanda" [a, b, =]; the answer is read at "="
    # --- model
    n_layers = 1  # transformer blocks
    d_model = 128  # residual stream width
    n_heads = 4  # attention heads of d_model / n_heads each
    d_mlp = 512  # hidden width of each block's ReLU MLP
    layer_norm = False  # True: pre-norm LayerNorm in each block and before the unembedding (Power)
    positions = "learned"  # position encoding: "learned" or "sinusoidal" (fixed, Power)
    embedding_std = d_model ** -0.5  # token (and learned position) embeddings start N(0, embedding_std^2)
    dtype = "float32"
    # --- optimisation
    lr = 1e-3  # AdamW learning rate, betas (0.9, 0.98)
    weight_decay = 1.0  # AdamW decoupled weight decay
    warmup_steps = 10  # linear learning-rate warmup: lr * min(1, (step + 1) / warmup_steps)
    batch_size = 0  # examples per step, shuffled each epoch; 0: full batch
    train_steps = 40000
    # --- measurement
    acc_threshold = 0.9  # t_train / t_test: first step with accuracy >= this
    phase_margin = 1000  # Delta: t_test - t_train below it is comprehension, above it grokking
    log_every = max(1, train_steps // 1000)  # metric cadence
    eval_every = 1  # metrics on the whole train and test splits every this many steps (1: exact thresholds)
    device = "auto"  # "auto": cuda when available, else cpu; or "cpu", "cuda"
    torch_threads = 1
    seed = 0  # seeds the split and the initialisation


@ex.named_config
def power():
    """Power et al. (2022): 2 layers, d_model 128, 4 heads, feed-forward 512 ReLU, LayerNorm,
    sinusoidal positions; AdamW lr 1e-3 (10-step warmup), weight decay 1; division mod 97
    with half the table for training, minibatches of min(512, N_train / 2), 1e5 steps (a GPU run)."""
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
    p = 113
    operation = "addition"
    sequence = "nanda"
    train_fraction = 0.3
    train_steps = 40000


@ex.named_config
def small():
    """Nanda's transformer on addition mod 31 with 70% of the pairs, CI-sized: it fits the
    training pairs within ~50 steps and reaches 0.9 test accuracy 150-350 steps later
    (seeds 0-4), in well under a minute on one CPU core."""
    p = 31
    train_fraction = 0.7
    lr = 3e-3  # 3x the papers' rate: at 1e-3 this size takes several thousand steps to generalise
    train_steps = 1000
    phase_margin = 100  # a tenth of the budget (the paper's 1e3 is a hundredth of 1e5)


@ex.named_config
def cpu_grokking():
    """Delayed generalisation itself on one CPU core: Nanda's transformer and the papers'
    optimiser (AdamW lr 1e-3, betas (0.9, 0.98), weight decay 1, full batch) on addition
    mod 31 with half of the pairs, as Power et al. train half of theirs. It fits the
    training pairs within a few hundred steps and reaches 0.9 test accuracy after ~15 000
    (tried first with 30% of the pairs: test accuracy 0.14 after 20 000 steps)."""
    p = 31
    train_fraction = 0.5
    train_steps = 25000
    eval_every = 10  # thresholds at a resolution of 10 steps: each evaluation is a forward over all 961 pairs
    log_every = 50


def _n_train(config):
    return n_train_examples(config["p"], config["operation"], config["train_fraction"])


ex.config_hook(harness.checks(
    harness.choice({"operation": tuple(OPERATIONS), "sequence": SEQUENCES, "positions": transformer.POSITIONS,
                    "device": transformer.DEVICES, "dtype": tuple(DTYPES)}),
    harness.integer({"p": 2, "train_steps": 1, "n_layers": 1, "d_model": 1, "n_heads": 1, "d_mlp": 1,
                     "warmup_steps": 0, "batch_size": 0, "log_every": 1, "eval_every": 1, "torch_threads": 1}),
    harness.divides("n_heads", "d_model"),
    harness.divides("eval_every", "log_every"),
    harness.boolean("layer_norm"),
    harness.positive("lr"),
    harness.non_negative("weight_decay", "embedding_std", "phase_margin"),
    harness.within("acc_threshold", 0, 1, closed="high"),
    harness.cuda_available("device"),
    harness.rule("p", lambda c: is_prime(c["p"]), "p must be prime with operation='division'",
                 when=lambda c: c["operation"] == "division"),
    harness.within("train_fraction", 0, 1, what="the fraction of pairs used for training"),
    harness.rule("train_fraction", lambda c: 0 < _n_train(c) < n_examples(c["p"], c["operation"]),
                 lambda c: f"for p={c['p']} it gives {_n_train(c)} of {n_examples(c['p'], c['operation'])} "
                           "examples for training; both splits need one"),
    harness.rule("batch_size", lambda c: c["batch_size"] <= _n_train(c),
                 lambda c: f"at most the {_n_train(c)} training examples (0: full batch)"),
))


# ------------------------------------------------------------------ data and model
@ex.capture
def build_task(p, operation, train_fraction, seed, sequence):
    return make_modular_task(p, operation, train_fraction, seed, sequence)


@ex.capture
def build_model(task, n_layers, d_model, n_heads, d_mlp, layer_norm, positions, embedding_std, dtype, seed):
    torch.manual_seed(seed)
    config = transformer.TransformerConfig(task.vocab_size, task.n_outputs, task.context_length, n_layers, d_model,
                                           n_heads, d_mlp, layer_norm, positions, embedding_std)
    return transformer.Transformer(config).to(DTYPES[dtype])


@ex.capture
def train_settings(train_steps, lr, weight_decay, warmup_steps, batch_size, eval_every):
    return transformer.TrainSettings(train_steps, lr, weight_decay, warmup_steps=warmup_steps,
                                     batch_size=batch_size, eval_every=eval_every)


# ------------------------------------------------------------------ the run
@ex.automain
def main(_run, train_steps, log_every, acc_threshold, phase_margin, device, torch_threads, seed):
    torch.set_num_threads(torch_threads)
    task = build_task()
    model = build_model(task)
    device = transformer.select_device(device)
    curves = harness.Curves(_run)
    outcome = transformer.train(model, task, train_settings(), log_every, on_log=curves.log,
                                acc_threshold=acc_threshold, device=device, seed=seed,
                                progress=harness.on_terminal())
    result = {
        "t_train": outcome.t_train, "t_test": outcome.t_test,
        "phase": classify_phase(outcome.t_train, outcome.t_test, train_steps, phase_margin),
        "final_train_acc": outcome.final["train.acc"], "final_test_acc": outcome.final["test.acc"],
        "steps": outcome.steps, "n_train": int(task.train_mask.sum()), "n_test": int((~task.train_mask).sum()),
        "device": str(device),
    }
    _run.info.update(result)

    thresholds = {"t_train": outcome.t_train, "t_test": outcome.t_test}
    title = f"{task.operation} mod {task.p}, phase: {result['phase']}"
    harness.save_figure(_run, figures.training_curves(curves, thresholds, title), "training_curves.png")
    harness.save_torch(_run, {k: v.cpu() for k, v in model.state_dict().items()}, "model.pt")
    harness.report(_run, f"phase {result['phase']}: t_train={outcome.t_train} t_test={outcome.t_test}; final train "
                         f"acc {result['final_train_acc']:.3f}, test acc {result['final_test_acc']:.3f} ({device})")
    return result
