"""Implicit bias of regression vs flow matching in the low-data regime (issue 6).

Flow matching: Lipman et al. (2023), "Flow Matching for Generative Modeling", arXiv
2210.02747, on the straight (rectified) path of Liu et al. (2023), arXiv 2209.03003.
Closed-form velocity field and memorisation: Bertrand et al. (2025), "On the Closed-Form
of Flow Matching", arXiv 2506.03719.

Question: when a target function is learned from very few samples, what does each
training paradigm do between the samples? Regression predicts f(c) directly; flow
matching learns a velocity field v(x, c, t) and integrates it from x0 to t = 1. One run
trains one paradigm on one task and measures its L1/L2 error on a dense evaluation set
(for ``proj`` also how far its predictions stray from the true subspace); the analysis
(analysis/flow_vs_regression.py, notebooks/flow_vs_regression.ipynb) compares paradigms
across seeds and numbers of training samples.

    python experiments/flow_vs_regression.py                                # recon, regression
    python experiments/flow_vs_regression.py with flow_gaussian             # recon, flow from N(0, I)
    python experiments/flow_vs_regression.py with proj flow_zeros dataset.num_train=20
    python experiments/flow_vs_regression.py with mode=flow training.learning_rate=0.001 dataset.num_train=100
    python experiments/flow_vs_regression.py with my_config.yaml            # any keys, nested as below
    python experiments/flow_vs_regression.py with quick                     # CI-sized, seconds

Figures (run artifacts): training_curves.png, predictions.png (prediction and truth over
c, training points marked), error_distribution.png, for flow runs integration.png (eval
L2 against integration steps, Euler and RK4), for proj subspace.png; checkpoints
model_best.pt (lowest eval L2) and model_final.pt.
"""
import torch

import harness
from analysis import flow_vs_regression as figures
from toymodels import flow_regression as fr

ex = harness.experiment("flow_vs_regression")

# Named sweeps for `python -m sweeps experiments/flow_vs_regression.py --sweep NAME`:
# every paradigm over seeds and training-set sizes, and the two architectures at num_train 50.
PARADIGMS = ["regression", "flow_zeros", "flow_gaussian"]
# The configurations of `converged` with fewer than 3 of 3 runs plateaued at 30 000 epochs
# (README "Measured at convergence"), the zeros flow last: at 30 000 its error wanders
# whatever the budget, where the others were still improving.
NOT_PLATEAUED_AT_30000 = [("recon", 10, "regression"), ("proj", 10, "regression"),
                          ("recon", 10, "flow_gaussian"), ("recon", 20, "flow_gaussian"),
                          ("proj", 10, "flow_gaussian"), ("proj", 20, "flow_gaussian"), ("proj", 50, "flow_gaussian"),
                          ("recon", 10, "flow_zeros"), ("recon", 20, "flow_zeros"), ("recon", 50, "flow_zeros"),
                          ("proj", 10, "flow_zeros"), ("proj", 20, "flow_zeros"), ("proj", 50, "flow_zeros")]
SWEEPS = {
    "num_train": {"grid": {"kind": ["recon", "proj"], "dataset.num_train": [10, 20, 50]},
                  "variants": PARADIGMS, "seeds": 5},
    "architecture": {"grid": {"kind": ["recon", "proj"]}, "named_configs": ["film"],
                     "variants": PARADIGMS, "seeds": 5},
    # The comparison at convergence: 30 000 epochs for every paradigm, where the slowest (the
    # flow from N(0, I)) has plateaued (the plateau rule is recorded per run).
    "converged": {"grid": {"kind": ["recon", "proj"], "dataset.num_train": [10, 20, 50]},
                  "variants": PARADIGMS, "config": {"training.num_epochs": 30000}, "seeds": 3},
    # Four times the budget, same seeds, for each (kind, num_train, paradigm) of `converged`
    # whose 30 000-epoch runs had not all plateaued; the comparisons take each configuration at
    # its longest budget (analysis.flow_vs_regression.at_longest_budget).
    "converged_longer": {"variants": [[paradigm, {"kind": kind, "dataset.num_train": n}]
                                      for kind, n, paradigm in NOT_PLATEAUED_AT_30000],
                         "config": {"training.num_epochs": 120000}, "seeds": 3},
    # Concat against FiLM at convergence (num_train 50): both architectures run again side by
    # side, so the comparison is paired by seed on one machine's runs.
    "architecture_converged": {"grid": {"kind": ["recon", "proj"], "network.architecture": ["concat", "film"]},
                               "variants": PARADIGMS, "config": {"training.num_epochs": 30000}, "seeds": 3},
    # Four times the budget for the one (kind, architecture, paradigm) of `architecture_converged`
    # that had not plateaued and does converge: concat's Gaussian flow on proj, as in
    # `converged_longer`. The zeros flow is not run again: its error wanders at 120 000 epochs too.
    "architecture_converged_longer": {"variants": [["flow_gaussian", {"kind": "proj", "network.architecture": "concat"}]],
                                      "config": {"training.num_epochs": 120000}, "seeds": 3},
}


@ex.config
def config():
    kind = "recon"  # "recon": learn f(c); "proj": learn g(c) = P f(c), every target in a known subspace
    mode = "regression"  # "regression": predict f(c) = model(0, c, 0); "flow": flow matching, integrate v
    seed = 0  # draws the target function, the training conditions, the initialisation and the training noise
    torch_threads = 1  # the models are small: more threads mostly add overhead
    # Comments on nested keys are here in the source; print_config shows the values.
    dataset = dict(
        num_train=50,  # training conditions c (samples of the target function)
        num_eval=1000,  # dense evaluation conditions: an even grid over [0, 1] for a scalar c
        target_dim=1,  # recon: dimension of f(c)
        condition_dim=1,  # dimension of c, drawn in [0, 1]^condition_dim
        num_components=3,  # trigonometric components per output dimension
        max_frequency=7,  # component frequencies are distinct primes <= this (2, 3, 5, 7): no harmonics
        weight_strategy="uniform",  # component weights: "uniform" or "inverse_freq" (proportional to 1/freq)
        sampling_strategy="grid",  # training conditions: "grid" (cell midpoints) or "random" (uniform)
        output_dim=8,  # proj: dimension of f and of g = P f
        subspace_dim=2,  # proj: rank of the orthogonal projection P
    )
    network = dict(
        architecture="concat",  # "concat": MLP on [x, c, t]; "film": MLP on x modulated by FiLM(c, t)
        hidden_dim=256,  # width of the hidden layers (and of the FiLM generator)
        num_layers=3,  # hidden layers
        activation="gelu",  # relu, gelu, silu or tanh
    )
    training = dict(
        batch_size=64,  # minibatch size (capped at num_train: with 50 samples an epoch is one full batch)
        num_epochs=3000,  # passes over the training set (regression fits 50 samples to ~1e-4 MSE by then)
        learning_rate=1e-3,  # Adam
        initial_dist="zeros",  # flow: x0 is "zeros" (a deterministic start) or "gaussian" (N(0, I))
    )
    training["log_interval"] = max(1, training["num_epochs"] // 300)  # epochs between train.loss records
    training["eval_interval"] = max(1, training["num_epochs"] // 60)  # epochs between evaluations (both sets)
    training["save_interval"] = 0  # epochs between checkpoint artifacts during training (0: at the end only)
    evaluation = dict(
        num_eval_steps=20,  # flow: integration steps from t = 0 to 1
        integration_method="rk4",  # flow: "euler" or "rk4"
        integration_steps=[1, 2, 4, 8, 16, 32, 64],  # flow: after training, eval L2 for each of these and method
    )


@ex.named_config
def recon():
    """Reconstruction: learn f(c), a sum of trigonometric components of distinct prime frequencies."""
    kind = "recon"


@ex.named_config
def proj():
    """Projection: learn g(c) = P f(c), f into R^8, P a rank-2 projection."""
    kind = "proj"


@ex.named_config
def source_example():
    """The source's example config exactly: ReLU, minibatches of 32, 5000 epochs, and the flow
    evaluated with one Euler step. The defaults depart from it on purpose: GELU (smooth fits
    between the few samples), batch 64 (one full batch up to 64 samples: no minibatch noise
    in a comparison of paradigms), 3000 epochs (measured: where regression has fitted), and
    20 RK4 steps (a converged integral, so the error is the learned field's, not the solver's;
    integration_steps still reports Euler and RK4 from 1 to 64 steps)."""
    network = dict(activation="relu")
    training = dict(batch_size=32, num_epochs=5000)
    evaluation = dict(num_eval_steps=1, integration_method="euler")


@ex.named_config
def quick():
    """CI-sized: 20 samples of a two-component function (frequencies 2 and 3), width 64,
    300 epochs at a higher learning rate (a few seconds; regression fits its samples)."""
    dataset = dict(num_train=20, num_eval=200, num_components=2, max_frequency=3)
    network = dict(hidden_dim=64)
    training = dict(num_epochs=300, learning_rate=5e-3)
    evaluation = dict(num_eval_steps=8, integration_steps=[1, 4, 16])


@ex.named_config
def regression():
    """Regression: predict f(c) = model(0, c, 0) directly."""
    mode = "regression"


@ex.named_config
def flow_zeros():
    """Flow matching from x0 = 0: the target velocity is x1 at every t (regression with inputs x_t, t)."""
    mode = "flow"
    training = dict(initial_dist="zeros")


@ex.named_config
def flow_gaussian():
    """Flow matching from x0 ~ N(0, I): a generative model of a deterministic target."""
    mode = "flow"
    training = dict(initial_dist="gaussian")


@ex.named_config
def euler():
    """Integrate the flow with Euler steps instead of RK4."""
    evaluation = dict(integration_method="euler")


@ex.named_config
def film():
    """FiLM network: x through an MLP whose hidden layers are modulated by (c, t)."""
    network = dict(architecture="film")


def _n_primes(config):
    return len(fr.primes_up_to(config["dataset"]["max_frequency"]))


ex.config_hook(harness.checks(
    harness.choice({"kind": fr.KINDS, "mode": fr.MODES, "network.architecture": fr.ARCHITECTURES,
                    "network.activation": fr.ACTIVATIONS, "training.initial_dist": fr.INITIAL_DISTS,
                    "evaluation.integration_method": fr.INTEGRATION_METHODS,
                    "dataset.weight_strategy": fr.WEIGHT_STRATEGIES,
                    "dataset.sampling_strategy": fr.SAMPLING_STRATEGIES}),
    harness.integer({"dataset.num_train": 1, "dataset.num_eval": 2, "dataset.target_dim": 1,
                     "dataset.condition_dim": 1, "dataset.num_components": 1, "dataset.max_frequency": 2,
                     "dataset.output_dim": 1, "dataset.subspace_dim": 1, "network.hidden_dim": 1,
                     "network.num_layers": 1, "training.batch_size": 1, "training.num_epochs": 1,
                     "training.log_interval": 1, "training.eval_interval": 1, "training.save_interval": 0,
                     "evaluation.num_eval_steps": 1, "torch_threads": 1, "seed": 0}),
    harness.positive("training.learning_rate"),
    harness.rule("dataset.subspace_dim", lambda c: c["dataset"]["subspace_dim"] <= c["dataset"]["output_dim"],
                 lambda c: f"the subspace dimension must be at most the output dimension "
                           f"({c['dataset']['output_dim']})"),
    harness.rule("dataset.num_components", lambda c: c["dataset"]["num_components"] <= _n_primes(c),
                 lambda c: f"there are only {_n_primes(c)} distinct primes <= "
                           f"max_frequency={c['dataset']['max_frequency']}"),
    harness.integer_list({"evaluation.integration_steps": 1}),
))


# ------------------------------------------------------------------ data and model
@ex.capture(prefix="dataset")
def build_dataset(kind, seed, num_train, num_eval, target_dim, condition_dim, num_components, max_frequency,
                  weight_strategy, sampling_strategy, output_dim, subspace_dim):
    return fr.make_dataset(kind, num_train, num_eval, target_dim, condition_dim, num_components, weight_strategy,
                           sampling_strategy, max_frequency, output_dim, subspace_dim, seed)


@ex.capture(prefix="network")
def build_model(dataset, seed, architecture, hidden_dim, num_layers, activation):
    torch.manual_seed(seed)
    return fr.make_model(architecture, dataset.dim, dataset.condition_dim, hidden_dim, num_layers, activation)


@ex.capture
def train_settings(mode, training, evaluation):
    return fr.TrainSettings(mode, training["batch_size"], training["num_epochs"], training["learning_rate"],
                            training["log_interval"], training["eval_interval"], training["initial_dist"],
                            evaluation["num_eval_steps"], evaluation["integration_method"])


@ex.automain
def main(_run, kind, mode, seed, torch_threads, training, evaluation):
    torch.set_num_threads(torch_threads)
    dataset = build_dataset(kind=kind, seed=seed)
    model = build_model(dataset, seed)
    settings = train_settings()
    curves = harness.Curves(_run)

    def save_checkpoints(outcome):
        for name, state in (("model_best.pt", outcome.best_state), ("model_final.pt", model.state_dict())):
            if state:
                harness.save_torch(_run, state, name)

    outcome = fr.train(model, dataset, settings, seed, on_log=curves.log, on_save=save_checkpoints,
                       save_interval=training["save_interval"], progress=harness.on_terminal())
    save_checkpoints(outcome)

    result = {"final_" + k.replace(".", "_"): v for k, v in outcome.final.items()}
    result.update({"best_" + k.replace(".", "_"): v for k, v in outcome.best.items() if k.startswith("eval.")})
    result.update({"best_epoch": outcome.best_epoch, "steps": outcome.steps, "dim": dataset.dim})
    # did it finish learning; the scale is the error of predicting the mean of the targets
    result["baseline_eval_l2"] = float(dataset.eval_y.var(dim=0, unbiased=False).mean())
    result["plateau"] = harness.plateau(curves, "eval.l2", higher_is_better=False, scale=result["baseline_eval_l2"])

    integration = None
    if mode == "flow":  # error against integration steps, per method (Euler vs RK4), of the final model
        integration = fr.integration_errors(model, dataset, settings, seed, tuple(evaluation["integration_steps"]))
        for method, by_steps in integration.items():
            for num_steps, l2 in by_steps.items():
                _run.log_scalar(f"integration.{method}.eval.l2", l2, num_steps)
    _run.info.update(result)

    prediction = fr.Evaluator(dataset, settings, seed).predict(model, "eval")
    title = f"{kind}, {mode}" + (f" from {settings.initial_dist}" if mode == "flow" else "") + \
        f", {len(dataset.train_c)} samples, seed {seed}"
    harness.save_figure(_run, figures.training_curves(curves, title), "training_curves.png")
    harness.save_figure(_run, figures.predictions(dataset, prediction, title), "predictions.png")
    harness.save_figure(_run, figures.error_distribution(dataset, prediction, title), "error_distribution.png")
    if integration is not None:
        harness.save_figure(_run, figures.integration(integration, title), "integration.png")
    if dataset.target.basis is not None:
        harness.save_figure(_run, figures.subspace(dataset, prediction, title), "subspace.png")

    summary = f"{kind} {mode}: eval L2 {result['final_eval_l2']:.4g} (best {result['best_eval_l2']:.4g} at epoch " \
              f"{outcome.best_epoch}), train L2 {result['final_train_l2']:.4g}"
    if dataset.target.basis is not None:
        summary += f"; subspace angle {result['final_eval_subspace_angle']:.3g} deg, in-subspace variance " \
                   f"{result['final_eval_in_subspace_variance']:.4f}"
    harness.report(_run, summary)
    return result
