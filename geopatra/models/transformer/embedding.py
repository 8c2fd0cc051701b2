"""Atom embedding: atomic numbers -> initial e3nn features (learned scalars, zero higher orders)."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor, nn


def hidden_irreps(num_features: int, num_tensor_features: int, lmax: int) -> o3.Irreps:
    """Per-atom feature irreps: ``num_features`` scalars (0e) plus ``num_tensor_features`` copies of
    each degree l = 1..lmax with the parity of the spherical harmonics, (-1)^l.

    >>> str(hidden_irreps(8, 4, 2))
    '8x0e+4x1o+4x2e'
    """
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    if lmax < 0:
        raise ValueError(f"lmax must be >= 0, got {lmax}")
    if lmax > 0 and num_tensor_features < 1:
        raise ValueError(f"num_tensor_features must be >= 1 when lmax > 0, got {num_tensor_features}")
    parts = [(num_features, (0, 1))]
    parts += [(num_tensor_features, (degree, (-1) ** degree)) for degree in range(1, lmax + 1)]
    return o3.Irreps(parts)


class AtomEmbedding(nn.Module):
    """Maps atomic numbers [n_atoms] to features [n_atoms, irreps.dim]: a learned vector per element
    in the scalar channels and zeros in the l > 0 channels (they are filled by the first attention
    layer from the pair directions)."""

    def __init__(self, irreps: o3.Irreps, max_z: int) -> None:
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        self.num_scalars = self.irreps[0].mul if self.irreps[0].ir.l == 0 else 0
        if self.num_scalars == 0:
            raise ValueError(f"irreps {self.irreps} must start with scalars (0e)")
        self.embed = nn.Embedding(max_z + 1, self.num_scalars)
        self.dim = self.irreps.dim

    def forward(self, z: Tensor) -> Tensor:
        scalars = self.embed(z)
        rest = scalars.new_zeros(z.shape[0], self.dim - self.num_scalars)
        return torch.cat([scalars, rest], dim=-1)
