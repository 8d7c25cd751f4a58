"""Entry point ``independent``: registers the independent suites (model pool and task pool each) without importing torch."""

from __future__ import annotations

from fusionbench_core.hookspecs import hookimpl

SUITES = {
    "independent-mlp": ("MLP", ["mnist"], "Wide MLPs (3x512) from independent random inits on MNIST-5k (Git Re-Basin)"),
    "independent-cnn": ("CNN", ["mnist"], "Small BatchNorm ResNets from independent random inits on MNIST-5k"),
    "independent-mlp-halves": ("MLPHalves", ["mnist", "mnist_0_4", "mnist_5_9"],
                               "Two wide MLPs on disjoint halves of MNIST-5k's digits (ZipIt!)"),
    "independent-cnn-halves": ("CNNHalves", ["mnist", "mnist_0_4", "mnist_5_9"],
                               "Two small BatchNorm ResNets on disjoint halves of MNIST-5k's digits (ZipIt!)"),
}


@hookimpl
def register_modelpools(register):
    """Register the independent suites' model pools (each builds itself on first use)."""
    for name, (prefix, tasks, summary) in SUITES.items():
        register(name, f"fusionbench_vision.independent.pool:{prefix}ModelPool", summary=summary, tasks=tasks,
                 provides=["data", "permutation-spec"])  # no pretrained model, no ArchitectureSpec


@hookimpl
def register_taskpools(register):
    """Register the independent suites' task pools (test accuracy and loss per task)."""
    for name, (prefix, tasks, summary) in SUITES.items():
        register(name, f"fusionbench_vision.independent.pool:{prefix}TaskPool", summary=summary, tasks=tasks,
                 provides=["class-logits"])
