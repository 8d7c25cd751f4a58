"""OT fusion (Singh and Jaggi 2020): transport each model's units onto the reference's, layer by layer, then average."""

from __future__ import annotations

from collections.abc import Mapping

from fusionbench_core import Hyperparameter, Requirement

from .base import AlignmentMethod


def transport(cost, solver: str = "emd", reg: float = 0.01):
    """The coupling of uniform marginals for ``cost [n_a, n_b]``, corrected by ``diag(1/ν)`` (columns sum to 1).

    ``emd``: POT's exact solver (a scaled permutation when the widths are equal). ``sinkhorn``:
    entropic OT with ``reg`` relative to the largest cost (the cost is divided by its maximum first,
    so ``reg`` means the same for every layer).
    """
    import numpy as np
    import ot
    import torch

    c = cost.numpy().astype(np.float64)
    n_a, n_b = c.shape
    mu, nu = np.full(n_a, 1.0 / n_a), np.full(n_b, 1.0 / n_b)
    if solver == "emd":
        plan = ot.emd(mu, nu, c)
    else:
        scale = c.max() if c.max() > 0 else 1.0
        plan = ot.sinkhorn(mu, nu, c / scale, reg)
    return torch.as_tensor(plan * n_b, dtype=torch.float64)


def apply_transport(spec, state: Mapping, maps: Mapping, *, only: set | None = None) -> dict:
    """``state`` with every listed axis carried onto the reference's units: ``Tᵀ·W`` on axis 0, ``W·T`` on inputs."""
    import torch

    by_key = spec.axes_by_key()
    out = {}
    for key, tensor in state.items():
        if not tensor.is_floating_point() or key not in by_key:
            out[key] = tensor
            continue
        t = tensor.to(torch.float64)
        for perm, ax in by_key[key]:
            if perm not in maps or (only is not None and perm not in only):
                continue
            if ax.block != 1:
                raise NotImplementedError("ot_fusion: block (attention-head) permutations are not supported")
            t = torch.tensordot(maps[perm].T, t.movedim(ax.axis, 0), dims=1).movedim(0, ax.axis)
        out[key] = t.to(tensor.dtype)
    return out


def fuse_maps(spec, state_a: Mapping, state_b: Mapping, solver: str = "emd", reg: float = 0.01) -> dict:
    """Transport maps ``T [n_a, n_b]`` carrying A's units onto B's, solved in the spec's depth order.

    For each permutation the ground features of a unit are its rows of every tensor whose axis 0
    it is, with the inputs already aligned by the maps solved before (``Ŵ_A = W_A·T_{ℓ−1}``); the
    cost is the Euclidean distance ``‖Ŵ_A[i] − W_B[j]‖``. Tensors with an input not yet aligned
    are left out of the features while any other tensor of the permutation is ready.
    """
    import torch

    maps: dict = {}
    by_key = spec.axes_by_key()
    for perm, axes in spec.permutations.items():
        outputs = [ax for ax in axes if ax.axis == 0]
        if not outputs:
            raise ValueError(f"ot_fusion: permutation '{perm}' of '{spec.architecture}' has no tensor producing its units")
        # A tensor whose inputs are not aligned yet (a residual stream written by a later block)
        # would compare rows with shuffled columns; leave it out while another tensor remains.
        ready = [ax for ax in outputs if all(other == perm or other in maps for other, _ in by_key[ax.key])]
        outputs = ready or outputs
        aligned = apply_transport(spec, {ax.key: state_a[ax.key] for ax in outputs}, maps)
        rows_a = torch.cat([aligned[ax.key].to(torch.float64).reshape(aligned[ax.key].shape[0], -1) for ax in outputs], 1)
        rows_b = torch.cat([state_b[ax.key].to(torch.float64).reshape(state_b[ax.key].shape[0], -1) for ax in outputs], 1)
        maps[perm] = transport(torch.cdist(rows_a, rows_b), solver, reg)
    return maps


class OTFusion(AlignmentMethod):
    """OT fusion: per layer in depth order, the optimal transport of each model's units onto the reference's, then the average.

    ``solver=emd`` is exact optimal transport (POT's ``ot.emd``), which for equal widths is a
    permutation, so the merge equals weight-based permutation alignment with a greedy layer order;
    ``solver=sinkhorn`` is the entropic relaxation (``reg``), a soft alignment. Ground features are
    weights (the paper's weight-based variant). Data is used only to re-estimate BatchNorm statistics.
    """

    name = "ot_fusion"
    requirement = Requirement.DATA_FREE
    hyperparameters = AlignmentMethod.hyperparameters + (
        Hyperparameter("solver", str, "emd", "Optimal-transport solver", choices=("emd", "sinkhorn")),
        Hyperparameter("reg", float, 0.01, "Sinkhorn regularisation (relative to the largest cost)",
                       minimum=0.0, minimum_exclusive=True),
    )

    def align(self, spec, modelpool, ref, ref_model, other, other_model):
        """``other``'s state transported onto the reference's units."""
        from .common import model_state

        state_b, state_a = model_state(ref_model), model_state(other_model)
        return apply_transport(spec, state_a, fuse_maps(spec, state_a, state_b, self.solver, self.reg))
