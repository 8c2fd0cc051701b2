"""Pair geometry for global attention: safe distances, directions, radial bases with no cutoff.

Every pair of atoms of a molecule is used, including the self pair (i, i) and, in padded batches,
pairs with padding atoms. Both have zero distance, where ``sqrt`` and ``x / |x|`` have infinite or
undefined derivatives; the helpers here use the double-``where`` pattern so values *and* gradients
(also second derivatives, needed for force training) stay finite there.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn


def safe_distance_and_direction(vec: Tensor) -> tuple[Tensor, Tensor]:
    """Distances and unit directions of pair vectors, finite (with finite gradients) at zero length.

    Args:
        vec: pair vectors r_j - r_i [..., 3], Å.

    Returns:
        ``(r, u)``: distances [...] in Å (exactly 0 for zero vectors) and unit vectors [..., 3]
        (the zero vector for zero-length pairs, so l > 0 spherical harmonics vanish there).
    """
    d2 = (vec * vec).sum(dim=-1)
    nonzero = d2 > 0
    # Inner where: sqrt never sees 0, so its derivative is finite; outer where: the value is exact.
    r = torch.where(nonzero, torch.sqrt(torch.where(nonzero, d2, torch.ones_like(d2))), torch.zeros_like(d2))
    denom = torch.where(nonzero, r, torch.ones_like(r))
    u = vec / denom.unsqueeze(-1)
    return r, u


class GaussianRBF(nn.Module):
    """Gaussian radial basis on [0, ``r_max``] Å with NO cutoff, fine at short and coarse at long range.

    ``num_rbf`` Gaussians in the variable u = ln(1 + r / 1 Å), centres evenly spaced on
    [0, ln(1 + r_max)] and width equal to the spacing. The resolution in r thus grows with the distance
    (for 32 functions up to 20 Å: about 0.2 Å at bond lengths, about 1 Å at 10 Å, 2 Å at 20 Å), so one
    basis resolves bond stretches and describes pairs across the whole molecule. Beyond ``r_max`` every
    function decays smoothly towards zero, so a filter built on it tends to the constant its network
    outputs for a zero input (its biases), not to zero: pairs further apart than ``r_max`` still
    interact. Set ``r_max`` to about the largest interatomic distance of the molecules of interest.

    Input: distances [...] in Å. Output: [..., num_rbf], dimensionless, values in (0, 1].
    """

    def __init__(self, num_rbf: int, r_max: float) -> None:
        super().__init__()
        if num_rbf < 2:
            raise ValueError(f"num_rbf must be >= 2, got {num_rbf}")
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 Å, got {r_max}")
        u_max = math.log1p(float(r_max))
        self.register_buffer("centres", torch.linspace(0.0, u_max, num_rbf), persistent=False)
        self.gamma = 1.0 / (2.0 * (u_max / (num_rbf - 1)) ** 2)
        self.num_rbf = num_rbf

    def forward(self, r: Tensor) -> Tensor:
        diff = torch.log1p(r).unsqueeze(-1) - self.centres
        return torch.exp(-self.gamma * diff * diff)


class BesselRBF(nn.Module):
    """Smooth radial basis: ``num_rbf`` spherical Bessel functions sin(n pi r / r_max) / r, n = 1..num_rbf,
    times a polynomial envelope (degree p = 6) that takes them to zero with two vanishing derivatives
    at ``r_max``, after Gasteiger et al. (DimeNet) and MACE. The resolution is uniform in r (shortest
    wavelength 2 r_max / num_rbf), so the radial functions a network builds from it are smooth: a prior
    against fitting noise in small training sets. NOT a cutoff of the model: beyond ``r_max`` every
    function is exactly zero and a filter built on it equals the constant its network outputs for a
    zero input, so pairs further apart still interact (as with :class:`GaussianRBF`).

    Input: distances [...] in Å. Output: [..., num_rbf] in 1/Å, finite (with finite derivatives) at r = 0.
    """

    def __init__(self, num_rbf: int, r_max: float, envelope_degree: int = 6) -> None:
        super().__init__()
        if num_rbf < 1:
            raise ValueError(f"num_rbf must be >= 1, got {num_rbf}")
        if not r_max > 0:
            raise ValueError(f"r_max must be > 0 Å, got {r_max}")
        self.register_buffer("n", torch.arange(1, num_rbf + 1, dtype=torch.float32), persistent=False)
        self.r_max, self.p, self.num_rbf = float(r_max), envelope_degree, num_rbf

    def forward(self, r: Tensor) -> Tensor:
        r = r.clamp(max=self.r_max).unsqueeze(-1)
        u, p = r / self.r_max, self.p
        envelope = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
        n = self.n.to(r.dtype)
        # double where: the r -> 0 limit n pi / r_max at r = 0, with finite derivatives of every order
        nonzero = r > 0
        r_safe = torch.where(nonzero, r, torch.ones_like(r))
        k = (math.pi / self.r_max) * n  # wavenumbers [num_rbf], 1/Å
        bessel = torch.where(nonzero, torch.sin(k * r_safe) / r_safe, k)
        return bessel * envelope


def cosine_envelope(r: Tensor, cutoff: float) -> Tensor:
    """Smooth cutoff 0.5 (cos(pi r / cutoff) + 1) for r < cutoff, exactly 0 (with zero gradient) beyond.

    Args:
        r: distances [...], Å.
        cutoff: cutoff radius, Å.

    Returns:
        Envelope values [...] in [0, 1]; 1 at r = 0.
    """
    inside = r < cutoff
    r_in = torch.where(inside, r, torch.zeros_like(r))
    value = 0.5 * (torch.cos(r_in * (math.pi / cutoff)) + 1.0)
    return torch.where(inside, value, torch.zeros_like(r))


def variance_preserving_mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with SiLU between them, weights ~ N(0, 1/fan_in) and zero biases, so that
    outputs (and hence the geometry dependence of the model) are O(1) from the first step."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        linear = nn.Linear(n_in, n_out)
        nn.init.normal_(linear.weight, std=1.0 / math.sqrt(n_in))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class RadialMLP(nn.Module):
    """Two-layer network from the radial basis to per-pair filters and tensor-product weights.

    Input: basis values [..., num_rbf]. Output: [..., out_features].
    """

    def __init__(self, num_rbf: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.net = variance_preserving_mlp([num_rbf, hidden, out_features])

    def forward(self, basis: Tensor) -> Tensor:
        return self.net(basis)
