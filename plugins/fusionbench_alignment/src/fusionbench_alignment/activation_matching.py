"""Git Re-Basin activation matching: permutations maximising the correlation of units' activations, then the average."""

from __future__ import annotations

from fusionbench_core import DataRequest, Requirement

from .base import AlignmentMethod


def match_activations(corr_by_perm) -> dict:
    """Per permutation, the assignment maximising the summed A-B correlation (``[2n, 2n]`` matrices, A first)."""
    import torch
    from scipy.optimize import linear_sum_assignment

    perms = {}
    for name, corr in corr_by_perm.items():
        n = corr.shape[0] // 2
        cross = torch.nan_to_num(corr[:n, n:], nan=0.0)
        _, cols = linear_sum_assignment(cross.numpy(), maximize=True)
        perms[name] = torch.as_tensor(cols, dtype=torch.long)
    return perms


class ActivationMatching(AlignmentMethod):
    """Permute every model's units to best correlate with the reference's on the pool's training inputs, then average.

    Activations are read at the spec's probe modules, on the first ``examples`` unlabelled training
    inputs of every model's task (both models see the same inputs). Each permutation is solved
    once with ``linear_sum_assignment`` on the Pearson correlations (no coordinate descent needed:
    activations do not depend on the other permutations).
    """

    name = "activation_matching"
    requirement = Requirement.TRAIN_STATISTICS
    data = DataRequest(split="train", examples=512, labelled=False)

    def align(self, spec, modelpool, ref, ref_model, other, other_model):
        """``π(θ_other)`` with π from the activation correlations."""
        from .common import correlations, model_state, require_data
        from .spec import permute_state

        require_data(modelpool, self.name)
        corr = correlations(ref_model, other_model, modelpool, spec, list(modelpool.model_names),
                            self.examples, self.batch_size)
        return permute_state(spec, model_state(other_model), match_activations(corr))
