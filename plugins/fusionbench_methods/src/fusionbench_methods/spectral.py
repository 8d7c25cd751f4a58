"""SVD helpers shared by ``tsv_m``, ``iso_c`` and ``iso_cts`` (not a method).

SVDs run in float64 on the CPU tensor's device; results are cast back to the input dtype.
"""

from __future__ import annotations

import torch


def svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD ``U, S, V`` (V, not Vᵀ) in float64."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return u, s, vh.mT


def orthogonalize(matrix: torch.Tensor) -> torch.Tensor:
    """The nearest matrix with orthonormal columns (polar factor): P·Qᵀ from SVD(M) = P·S·Qᵀ."""
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


def decorrelated(us: list[torch.Tensor], vs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U⊥, V⊥)``: the polar factors of the concatenated left bases [U_1 … U_k] and right bases [V_1 … V_k]."""
    return orthogonalize(torch.cat(us, dim=1)), orthogonalize(torch.cat(vs, dim=1))


def mean_delta(pretrained: torch.Tensor, deltas_sum: torch.Tensor, count: int, scaling: float) -> torch.Tensor:
    """θ₀ + α·(Σ τ_i)/T: what the spectral methods do with tensors that are not matrices."""
    return pretrained + scaling * deltas_sum / count
