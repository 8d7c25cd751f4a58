"""Hyperparameters several mixing methods share, declared once with their ranges (torch-free)."""

from __future__ import annotations

from fusionbench_core import Hyperparameter

SCALING_FACTOR = Hyperparameter("scaling_factor", float, 0.3,
                                "λ of the task arithmetic that merges the parameters outside the mixture layers")
DEVICE = Hyperparameter("device", str, "auto", "auto (CUDA when present), cpu or cuda[:N]")


ROUTER_STEPS = 1000
"""Upstream's router-training steps (WEMoE, sparse WEMoE and RankOne-MoE configs: ``max_steps: 1000``)."""
ROUTER_LR = 1e-4
"""Upstream's router learning rate (the same configs: ``lr: 1e-4``)."""


def router_training(steps: int = ROUTER_STEPS, lr: float = ROUTER_LR, router_hidden: int | None = None,
                    router_help: str = "default: the MLP's input width (upstream WEMoE)") -> tuple[Hyperparameter, ...]:
    """Test-time router training: steps, Adam learning rate, batch size, router size and initialisation.

    The defaults are upstream's protocol (1000 Adam steps at 1e-4, batches of 16 per task).
    """
    return (
        Hyperparameter("steps", int, steps, "Adam steps of test-time entropy minimisation (upstream: 1000)", minimum=0),
        Hyperparameter("lr", float, lr, "Adam learning rate (upstream: 1e-4)", minimum=0.0, minimum_exclusive=True),
        Hyperparameter("batch_size", int, 16, "Unlabelled test inputs per task per step", minimum=1),
        Hyperparameter("examples", int, None, "Cap on test inputs per task (default: all)", minimum=1),
        Hyperparameter("init_lambda", float, 0.3,
                       "The routers' initial output (their output bias): task arithmetic's λ"),
        Hyperparameter("router_hidden", int, router_hidden,
                       f"Width of the router's hidden layer; 0: one linear layer; {router_help}", minimum=0),
        Hyperparameter("router_init_std", float, 0.01,
                       "Std of the routers' initial weights (0: every input starts at init_lambda)", minimum=0.0),
        Hyperparameter("batch_reduce", bool, False,
                       "Route once per batch (the batch's mean weights; as upstream's image runs), "
                       "not per example"),
        DEVICE,
    )


def upscaled_mlps() -> Hyperparameter:
    """Which of the pool's MLPs to up-scale."""
    return Hyperparameter("mlps", list, [],
                          "Patterns (fnmatch) of the MLPs to up-scale, among those the pool declares; default: all")
