"""Two-stage learning on random labels (Zhang et al. 2017, "Understanding deep learning
requires rethinking generalization", arXiv 1611.03530, for stage 1; the distillation-style
stage 2 follows Stanton et al. 2021, arXiv 2106.05945, and Maennel et al. 2020, arXiv
2006.10455).

Question: when a network memorises random labels, does it learn an arbitrary lookup
table, or a smooth function that another network can learn from few samples?

Stage 1: Network_1 fits uniformly random labels of Gaussian inputs. Stage 2: Network_2
(same architecture, fresh initialisation) learns Network_1's argmax labels on fresh
inputs. On held-out inputs we measure how often the two agree (with Cohen's kappa and the
softmax output correlation), after every stage-2 epoch and for growing stage-2 training
sets. Two references make the number interpretable: the control (Network_2 learns a fresh
random label per input, no structure: agreement at chance, ~1/n_classes) and the ceiling
(a second Network_2, other initialisation and batch order, same labels: how far two
students of the same teacher agree). The figure: summary.png (stage-1 and stage-2 curves,
agreement over epochs, sample efficiency, key numbers).

    python experiments/two_stage.py                          # the 100-dim toy, ~1-2 min on one CPU core
    python experiments/two_stage.py with input_dim=20 seed=3
    python experiments/two_stage.py with anisotropic         # inputs with principal components
    python experiments/two_stage.py with full                # ResNet-18, 3x32x32, 50k samples: a GPU job
"""
import torch

import harness
from analysis.two_stage import summary_figure
from toymodels import two_stage
from toymodels.classifier import predict
from toymodels.transformer import DEVICES, select_device

ex = harness.experiment("two_stage")

# Named sweeps for `python -m sweeps experiments/two_stage.py --sweep NAME`.
SWEEPS = {
    "input_dim": {"grid": {"input_dim": [20, 50, 100, 200]}, "seeds": 5},
    "architecture": {"grid": {"hidden_sizes": [[64], [256, 128, 64], [512, 512, 256, 128]]}, "seeds": 5},
    "input_cov": {"grid": {"input_cov": ["isotropic", "power_law"]}, "seeds": 5},
    # how much Network_1 memorises: fewer stage-1 points should leave a smoother function
    "stage1_samples": {"grid": {"stage1_samples": [1000, 2000, 5000]}, "seeds": 5},
}


@ex.config
def config():
    # --- data: Gaussian inputs, N(0, diag(scale^2))
    input_dim = 100  # dimension of each input (for resnet18: channels * s * s)
    input_cov = "isotropic"  # "isotropic", or "power_law": variance of coordinate k ~ k^-cov_exponent (mean 1)
    cov_exponent = 1.0  # power_law only
    n_classes = 10  # the random labels are uniform over this many classes (chance agreement ~1/n_classes)
    stage1_samples = 5000  # inputs Network_1 memorises, with uniformly random labels
    stage2_samples = 5000  # fresh inputs labelled by Network_1's argmax, for Network_2
    test_samples = 1000  # fresh held-out inputs on which the two networks are compared
    sample_sizes = [500, 1000, 2000, 5000]  # stage-2 training-set sizes for sample efficiency (<= stage2_samples)
    # --- networks (both stages use the same architecture)
    architecture = "mlp"  # "mlp" or "resnet18" (CIFAR-style, inputs reshaped to channels x s x s)
    hidden_sizes = [256, 128, 64]  # mlp: hidden layer widths, ReLU between
    channels = 3  # resnet18: input channels
    resnet_width = 64  # resnet18: width of the first stage (64: the standard network)
    # --- optimisation: Adam, minibatches, cross-entropy
    lr = 1e-3  # Adam learning rate of every network, both stages
    batch_size = 128  # examples per step, reshuffled every epoch
    epochs_stage1 = 300  # at most this many epochs; stage 1 stops once it fits (stage1_target_acc)
    stage1_target_acc = 1.0  # train accuracy on the random labels at which stage 1 counts as fitted
    epochs_stage2 = 100  # every stage-2 network (main, control, ceiling, sample sizes) trains this many epochs
    # --- references
    control = True  # also train the control: Network_2 on fresh random labels of the same inputs
    ceiling = True  # also train a second Network_2 (other init and batch order) on Network_1's labels
    # --- system
    seed = 0  # seeds the data, the labels, every initialisation and every batch order
    torch_threads = 1  # these networks are small; one thread per run lets runs go in parallel
    device = "cpu"  # "cpu", "cuda" or "auto" (cuda when available): the full config wants a GPU


@ex.named_config
def anisotropic():
    """Inputs with a power-law covariance (variance of coordinate k ~ 1/k), so there are
    principal components for the first layer to align with (Maennel et al. 2020)."""
    input_cov = "power_law"
    cov_exponent = 1.0


@ex.named_config
def tiny():
    """CI-sized: 20-dim inputs, 1000 samples per stage, 500 held out, 20 stage-2 epochs at
    twice the learning rate; a few seconds on one core (the network is the default MLP)."""
    input_dim = 20
    stage1_samples = 1000
    stage2_samples = 1000
    test_samples = 500
    sample_sizes = [250, 500, 1000]
    epochs_stage1 = 200
    epochs_stage2 = 20
    lr = 2e-3  # stage 1 fits in ~30 epochs instead of ~50


@ex.named_config
def full():
    """The large version: a ResNet-18 on random 3x32x32 inputs, 50k samples per stage,
    200 epochs (a GPU job: several GPU-hours; see the README)."""
    architecture = "resnet18"
    input_dim = 3 * 32 * 32
    channels = 3
    stage1_samples = 50000
    stage2_samples = 50000
    test_samples = 10000
    sample_sizes = [5000, 10000, 25000, 50000]
    epochs_stage1 = 200
    epochs_stage2 = 200
    lr = 1e-3
    batch_size = 128
    device = "auto"


ex.config_hook(harness.checks(
    harness.choice({"architecture": two_stage.ARCHITECTURES, "input_cov": two_stage.INPUT_COVARIANCES,
                    "device": DEVICES}),
    harness.integer({"input_dim": 1, "n_classes": 2, "stage1_samples": 1, "stage2_samples": 1, "test_samples": 1,
                     "channels": 1, "resnet_width": 1, "batch_size": 1, "epochs_stage1": 1, "epochs_stage2": 1,
                     "torch_threads": 1}),
    harness.integer_list({"hidden_sizes": 1, "sample_sizes": 1}),
    harness.rule("sample_sizes", lambda c: max(c["sample_sizes"]) <= c["stage2_samples"],
                 lambda c: f"every size must be at most stage2_samples={c['stage2_samples']}"),
    harness.rule("input_dim", lambda c: two_stage.image_size_for(c["input_dim"], c["channels"]) is not None,
                 lambda c: f"with architecture='resnet18' it must be channels * s * s (channels={c['channels']})",
                 when=lambda c: c["architecture"] == "resnet18"),
    harness.positive("lr"),
    harness.non_negative("cov_exponent"),
    harness.within("stage1_target_acc", 0, 1, closed="high"),
    harness.boolean("control", "ceiling"),
    harness.cuda_available("device"),
))


# ------------------------------------------------------------------ data and networks
# Each random role has its own stream, so changing one size never changes the others' draws.
STREAMS = {"stage1_inputs": 1, "stage1_labels": 2, "stage2_inputs": 3, "test_inputs": 4, "control_labels": 5,
           "network_1": 11, "network_2": 12, "control": 13, "ceiling": 14, "sample_size": 15}


def stream_seed(seed: int, role: str, index: int = 0) -> int:
    return seed * 1000 + STREAMS[role] * 50 + index


@ex.capture
def build_inputs(role, n, input_dim, input_cov, cov_exponent, seed):
    scales = two_stage.input_scales(input_dim, input_cov, cov_exponent)
    return two_stage.gaussian_inputs(n, scales, torch.Generator().manual_seed(stream_seed(seed, role)))


@ex.capture
def build_network(role, architecture, input_dim, hidden_sizes, n_classes, channels, resnet_width, seed, index=0):
    torch.manual_seed(stream_seed(seed, role, index))
    return two_stage.build_network(architecture, input_dim, hidden_sizes, n_classes, channels, resnet_width)


@ex.capture
def train_network(model, inputs, labels, role, epochs, lr, batch_size, seed, on_epoch=None, stop_at_acc=None,
                  index=0):
    return two_stage.fit(model, inputs, labels, epochs, lr, batch_size, stream_seed(seed, role, index),
                         stop_at_acc=stop_at_acc, on_epoch=on_epoch, progress=harness.on_terminal())


@ex.automain
def main(_run, n_classes, stage1_samples, stage2_samples, test_samples, sample_sizes, epochs_stage1,
         stage1_target_acc, epochs_stage2, control, ceiling, seed, torch_threads, device):
    torch.set_num_threads(torch_threads)
    device = select_device(device)
    curves = harness.Curves(_run)

    def logger(prefix):
        return lambda epoch, stats: curves.log(epoch, stats, prefix=prefix)

    x1 = build_inputs("stage1_inputs", stage1_samples).to(device)
    x2 = build_inputs("stage2_inputs", stage2_samples).to(device)
    x_test = build_inputs("test_inputs", test_samples).to(device)
    y1 = two_stage.random_labels(stage1_samples, n_classes,
                                 torch.Generator().manual_seed(stream_seed(seed, "stage1_labels"))).to(device)

    # Stage 1: Network_1 memorises the random labels (stops once it fits them).
    network_1 = build_network("network_1").to(device)
    log_stage1 = logger("stage1")
    stage1 = train_network(network_1, x1, y1, "network_1", epochs_stage1, stop_at_acc=stage1_target_acc,
                           on_epoch=lambda e, s: log_stage1(e, {"loss": s.loss, "acc": s.acc}))
    teacher_test = predict(network_1, (x_test,))
    y2 = two_stage.argmax_labels(network_1, x2)

    def student(role, labels, n=stage2_samples, index=0, prefix=None):
        """A fresh Network_2 trained on the first n stage-2 inputs; per-epoch metrics under prefix."""
        network = build_network(role, index=index).to(device)
        log = logger(prefix) if prefix else None

        def on_epoch(epoch, stats):
            if log:
                log(epoch, {"loss": stats.loss, "acc": stats.acc,
                            **two_stage.compare(teacher_test, predict(network, (x_test,)))})
        history = train_network(network, x2[:n], labels[:n], role, epochs_stage2, on_epoch=on_epoch, index=index)
        return network, history

    # Stage 2: Network_2 learns Network_1's labels; agreement on held-out inputs every epoch.
    network_2, stage2 = student("network_2", y2, prefix="stage2")
    student_test = predict(network_2, (x_test,))
    final = two_stage.compare(teacher_test, student_test)
    result = {"stage1_epochs": len(stage1), "stage1_train_acc": stage1[-1].acc,
              "stage2_train_acc": stage2[-1].acc, **{f"test_{k}": v for k, v in final.items()},
              "teacher_label_max_fraction": torch.bincount(y2, minlength=n_classes).max().item() / stage2_samples}

    if control:  # the same protocol on a labelling with no structure: agreement must sit at chance
        y_control = two_stage.random_labels(stage2_samples, n_classes,
                                            torch.Generator().manual_seed(stream_seed(seed, "control_labels")))
        _, control_history = student("control", y_control.to(device), prefix="control")
        result.update({"control_train_acc": control_history[-1].acc,
                       "control_agreement": curves["control.agreement"][1][-1],
                       "control_kappa": curves["control.kappa"][1][-1]})
    if ceiling:  # two students of the same teacher: how far they agree is the ceiling for teacher-student
        ceiling_network, _ = student("ceiling", y2)
        mutual = two_stage.compare(student_test, predict(ceiling_network, (x_test,)))
        result.update({"ceiling_agreement": mutual["agreement"], "ceiling_kappa": mutual["kappa"],
                       "ceiling_correlation": mutual["correlation"]})

    # Sample efficiency: fresh students on the first n stage-2 inputs (nested sets, same teacher).
    efficiency = {}
    for index, n in enumerate(sorted(set(sample_sizes))):
        if n == stage2_samples:  # the main Network_2 is exactly this run
            efficiency[n] = final
        else:
            network, _ = student("sample_size", y2, n=n, index=index)
            efficiency[n] = two_stage.compare(teacher_test, predict(network, (x_test,)))
        for name in ("agreement", "kappa", "correlation"):
            _run.log_scalar(f"sample_efficiency.{name}", efficiency[n][name], n)
    result.update({f"agreement_n{n}": m["agreement"] for n, m in efficiency.items()})
    _run.info.update(result)

    harness.save_figure(_run, summary_figure(curves, efficiency, result, n_classes), "summary.png")
    harness.report(_run, f"stage 1 fitted {result['stage1_train_acc']:.3f} of the random labels in {len(stage1)} "
                         f"epochs; held-out agreement {final['agreement']:.3f} (kappa {final['kappa']:.3f}, output "
                         f"correlation {final['correlation']:.3f})"
                         + (f"; control {result['control_agreement']:.3f}" if control else "")
                         + (f"; ceiling {result['ceiling_agreement']:.3f}" if ceiling else ""))
    return result
