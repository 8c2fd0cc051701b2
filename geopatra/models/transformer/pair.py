"""Distance-filtered pair convolution: an un-normalised invariant message on the scalar channel.

Softmax attention averages over senders (weights sum to 1), so in a 42-atom molecule a bonded partner
contributes a few per cent of a message and bond stretches, which dominate the forces, are learned
slowly. This block adds, for receiver i,

    p_i = pair_norm * sum_j  phi(r_ij) * v(s_j)      [pair_features]

(SchNet-like continuous filter; ``phi`` a bias-free network of the radial basis, so phi -> 0 as the
basis vanishes far beyond ``rbf_max``, and ``v`` linear in the normalised scalar features), mapped
back onto the scalar channels. With it even one layer is a many-element pair potential.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PairConvolution(nn.Module):
    """Pair filter, value and output maps of the pair message (used inside
    :class:`~geopatra.models.transformer.attention.GeometricAttention`, which does the chunking).

    Args:
        num_scalars: scalar (0e) channels of the node features.
        num_rbf: radial basis size.
        hidden: hidden width of the filter network.
        pair_features: channels of the pair message.
    """

    def __init__(self, num_scalars: int, num_rbf: int, hidden: int, pair_features: int) -> None:
        super().__init__()
        # bias-free so that phi(basis = 0) = 0: distant pairs (basis -> 0) contribute nothing
        self.filter = nn.Sequential(
            nn.Linear(num_rbf, hidden, bias=False), nn.SiLU(), nn.Linear(hidden, pair_features, bias=False)
        )
        # a Gaussian basis is non-negative with ~2-3 active functions per distance: scale the first layer
        # so its pre-activations are O(1); the SiLU output has a mean, so the second layer uses 1/fan_in.
        nn.init.normal_(self.filter[0].weight, std=1.0)
        nn.init.normal_(self.filter[2].weight, std=1.0 / math.sqrt(hidden))
        self.value = nn.Linear(num_scalars, pair_features)
        self.output = nn.Linear(pair_features, num_scalars)

    def aggregate(self, basis: Tensor, mask: Tensor, env: Tensor | None, values: Tensor) -> Tensor:
        """Pair messages [B, c, pair_features] of c receivers from basis [B, c, N, R], mask [B, c, N],
        envelope [B, c, N] or None and sender values [B, N, pair_features]."""
        weight = mask.to(basis.dtype) if env is None else mask.to(basis.dtype) * env
        filt = self.filter(basis) * weight.unsqueeze(-1)  # [B, c, N, P]
        return torch.einsum("bijp,bjp->bip", filt, values)
