"""The sGDML descriptor: inverse pairwise distances, and its sparse Jacobian.

For a molecule of N atoms the descriptor has D = N(N-1)/2 entries ``x_ab = 1 / |r_a - r_b|`` over
the pairs ``a > b`` in the order of ``numpy.tril_indices(N, -1)`` (the order the reference sGDML
code uses). Each entry depends on two atoms only, so the Jacobian [D, 3N] is never stored: it is
represented by the pair gradients

    g[a, b] = ∂x_ab / ∂r_a = -(r_a - r_b) / |r_a - r_b|³      [N, N, 3] per frame, 1/Å²,

(``g[b, a] = -g[a, b]``, ``g[a, a] = 0``), from which Jacobian-vector products cost O(N²):

    (J v)_ab   = g[a, b] · (v_a - v_b)                         (:func:`jvp`)
    (Jᵀ y)_a   = Σ_b g[a, b] y_ab                               (:func:`vjp`)

Positions are in Å, so the descriptor is in 1/Å.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pair_indices(n_atoms: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Indices ``(a, b)`` [D] of the pairs ``a > b`` in ``numpy.tril_indices(N, -1)`` order."""
    idx = torch.tril_indices(n_atoms, n_atoms, offset=-1, device=device)
    return idx[0], idx[1]


def descriptor(R: Tensor) -> Tensor:
    """Inverse pairwise distances ``x`` [..., D] (1/Å) of positions ``R`` [..., N, 3] (Å).

    Differentiable with respect to ``R``.
    """
    a, b = pair_indices(R.shape[-2], R.device)
    diff = R[..., a, :] - R[..., b, :]
    return torch.linalg.vector_norm(diff, dim=-1).reciprocal()


def pair_gradients(R: Tensor) -> Tensor:
    """Pair gradients ``g`` [..., N, N, 3] (1/Å²) of the descriptor, see the module docstring."""
    n = R.shape[-2]
    diff = R[..., :, None, :] - R[..., None, :, :]  # [..., N, N, 3]: r_a - r_b
    dist2 = (diff * diff).sum(-1)
    eye = torch.eye(n, dtype=torch.bool, device=R.device)
    inv3 = torch.where(eye, torch.zeros_like(dist2), dist2.clamp_min(1e-300).pow(-1.5))
    return -diff * inv3[..., None]


def to_square(y: Tensor, n_atoms: int) -> Tensor:
    """Symmetric [..., N, N] matrix with zero diagonal from pair values ``y`` [..., D]."""
    a, b = pair_indices(n_atoms, y.device)
    out = y.new_zeros(*y.shape[:-1], n_atoms, n_atoms)
    out[..., a, b] = y
    out[..., b, a] = y
    return out


def jvp(g: Tensor, v: Tensor) -> Tensor:
    """``J v`` [..., D] for pair gradients ``g`` [..., N, N, 3] and displacements ``v`` [..., N, 3]."""
    a, b = pair_indices(g.shape[-2], g.device)
    return (g[..., a, b, :] * (v[..., a, :] - v[..., b, :])).sum(-1)


def vjp(g: Tensor, y: Tensor) -> Tensor:
    """``Jᵀ y`` [..., N, 3] for pair gradients ``g`` [..., N, N, 3] and pair values ``y`` [..., D]."""
    y_sq = to_square(y, g.shape[-2])
    return torch.einsum("...abk,...ab->...ak", g, y_sq)


def descriptor_permutation(perm: Tensor) -> Tensor:
    """Descriptor index map [D] of an atom permutation ``perm`` [N]: ``x(R[perm]) == x(R)[out]``."""
    n = perm.shape[-1]
    a, b = pair_indices(n, perm.device)
    lookup = torch.zeros(n, n, dtype=torch.long, device=perm.device)
    lookup[a, b] = torch.arange(a.numel(), device=perm.device)
    lookup = lookup + lookup.T
    return lookup[perm[a], perm[b]]
