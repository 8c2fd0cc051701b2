"""Atomic density embedding: each atom's first features describe every other atom of its molecule.

For receiving atom i, channel c of degree l (component m)::

    A_icm = sum_j R_cl(r_ij) Y_lm(r_ij / |r_ij|) s_jc

with ``R_cl`` learned radial functions (one per channel and degree, from a network of the radial
basis, no cutoff) and ``s_j`` a learned vector per element of the sender. These are the atomic-density
projections of ACE and MACE (their "A-basis"), summed here over all atoms of the molecule (within the
cutoff and times its envelope when one is set). A per-irrep linear map makes them node features of the
model's irreps, added to the element embedding before the first attention layer; the map starts at
zero, so the model starts as it would without this embedding.

Pair-sized memory is O(feature channels) per pair, once per forward pass (not per layer), and not
chunked: ``pair_chunk_size`` bounds the attention layers only.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import Tensor, nn

from geopatra.models.transformer.attention import PairGeometry, to_dense
from geopatra.models.transformer.radial import RadialMLP


class AtomicDensity(nn.Module):
    """Density features [n_atoms, irreps.dim] from atomic numbers [n_atoms] and a :class:`PairGeometry`.

    ``irreps`` must have one block per degree l = 0..lmax with parity (-1)^l (the parity of Y_l), as
    :func:`~geopatra.models.transformer.embedding.hidden_irreps` makes them.
    """

    def __init__(self, irreps: o3.Irreps, num_rbf: int, radial_hidden: int, max_z: int) -> None:
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        for degree, (_, ir) in enumerate(self.irreps):
            if ir != o3.Irrep(degree, (-1) ** degree):
                raise ValueError(f"irreps {self.irreps} must be one block per degree 0, 1, ... with parity (-1)^l")
        self.channels = [mul for mul, _ in self.irreps]
        self.radial = RadialMLP(num_rbf, radial_hidden, sum(self.channels))
        self.species = nn.Embedding(max_z + 1, sum(self.channels))
        self.linear = o3.Linear(self.irreps, self.irreps)
        with torch.no_grad():
            self.linear.weight.zero_()

    def forward(self, z: Tensor, geometry: PairGeometry) -> Tensor:
        g = geometry
        radial = self.radial(g.basis)  # [P, c, M, C]
        radial = torch.where(g.mask.unsqueeze(-1), radial, torch.zeros_like(radial))
        if g.envelope is not None:
            radial = radial * g.envelope.unsqueeze(-1)
        species = self.species(z)  # [n_atoms, C]
        if g.neighbors is None:  # dense [B, N, N]: the senders' elements along the last pair axis
            senders = to_dense(species, g.flat_index, g.num_graphs, g.n_max).unsqueeze(1)  # [B, 1, N, C]
        else:  # neighbour lists [n_atoms, 1, K]
            senders = species[g.neighbors].unsqueeze(1)  # [n_atoms, 1, K, C]
        weighted = radial * senders
        pieces, start = [], 0
        for degree, mul in enumerate(self.channels):
            sh = g.sh[..., degree * degree : (degree + 1) ** 2]  # [P, c, M, 2l + 1]
            block = torch.einsum("pcmk,pcms->pcks", weighted[..., start : start + mul], sh)
            pieces.append(block.flatten(-2))  # channel-major, as e3nn lays out an irrep block
            start += mul
        return self.linear(g.per_atom(torch.cat(pieces, dim=-1)))  # [P, c, irreps.dim] -> [n_atoms, ...]
