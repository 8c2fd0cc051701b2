"""Node-wise equivariant blocks of a GeoPaTra layer: the gated feed-forward and an equivariant norm.

Both act on per-atom features [n_atoms, irreps.dim] (scalars 0e first, then l = 1..lmax blocks) and
commute with rotations and reflections.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import Gate
from torch import Tensor, nn


def irrep_blocks(irreps: o3.Irreps) -> list[tuple[int, int, int, int]]:
    """(multiplicity, degree l, dimension 2 l + 1, start column) of each block of ``irreps``, as plain
    ints: the forward passes use these, never the e3nn ``Irreps`` (torch.compile cannot guard on them)."""
    return [(mul, ir.l, ir.dim, sl.start) for (mul, ir), sl in zip(irreps, irreps.slices())]


def channel_invariants(x: Tensor, blocks: list[tuple[int, int, int, int]]) -> Tensor:
    """Squared norms |x_u^(l)|^2 of every l > 0 channel u [n_atoms, number of l > 0 channels] of features
    x laid out as ``blocks`` (:func:`irrep_blocks`): the invariants of a node's own tensor features (a
    two-body product of the node with itself)."""
    parts = [
        x[:, start : start + mul * dim].reshape(x.shape[0], mul, dim).square().sum(dim=-1)
        for mul, degree, dim, start in blocks
        if degree > 0
    ]
    return torch.cat(parts, dim=-1) if parts else x.new_zeros(x.shape[0], 0)


class GatedFeedForward(nn.Module):
    """Equivariant point-wise block: linear -> gate (SiLU on scalars, sigmoid gates on l > 0) -> linear.

    With ``node_invariants`` the first linear layer also sees the squared norms of the node's l > 0
    channels (:func:`channel_invariants`), so the scalars and gates depend on the node's angular
    features, not only on its scalars (a node-level many-body product).

    Input and output: [..., irreps.dim].
    """

    def __init__(self, irreps: o3.Irreps, node_invariants: bool = False) -> None:
        super().__init__()
        irreps = o3.Irreps(irreps)
        self.irreps = irreps
        self._blocks = irrep_blocks(irreps)
        scalars = o3.Irreps([(mul, ir) for mul, ir in irreps if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in irreps if ir.l > 0])
        if gated.num_irreps > 0:
            self.act = Gate(scalars, [nn.functional.silu], f"{gated.num_irreps}x0e", [torch.sigmoid], gated)
            irreps_mid_in, irreps_mid_out = self.act.irreps_in, self.act.irreps_out
        else:
            self.act = nn.SiLU()
            irreps_mid_in = irreps_mid_out = scalars
        self.node_invariants = node_invariants and gated.num_irreps > 0
        irreps_in = irreps + o3.Irreps(f"{gated.num_irreps}x0e") if self.node_invariants else irreps
        self.lin1 = o3.Linear(irreps_in, irreps_mid_in)
        self.lin2 = o3.Linear(irreps_mid_out, irreps)

    def forward(self, x: Tensor) -> Tensor:
        if self.node_invariants:
            x = torch.cat([x, channel_invariants(x, self._blocks)], dim=-1)
        return self.lin2(self.act(self.lin1(x)))


class EquivariantLayerNorm(nn.Module):
    """Layer norm for irreps features: scalars are centred and scaled to unit variance over their
    channels; each l > 0 block is divided by the RMS norm of its channels (not centred, which would
    break equivariance). A learned scale per channel (and a bias on the scalars) follows.

    Input and output: [n_atoms, irreps.dim]. ``eps`` keeps all-zero features (the l > 0 channels of
    the embedding) finite, with finite gradients.
    """

    def __init__(self, irreps: o3.Irreps, eps: float = 1e-5) -> None:
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        self._blocks = irrep_blocks(self.irreps)
        self.eps = eps
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(mul)) for mul, _ in self.irreps)
        self.bias = nn.Parameter(torch.zeros(self.irreps[0].mul)) if self.irreps[0].ir.l == 0 else None

    def forward(self, x: Tensor) -> Tensor:
        n, out = x.shape[0], []
        for i, (mul, degree, dim, start) in enumerate(self._blocks):
            block = x[:, start : start + mul * dim].reshape(n, mul, dim)
            if degree == 0:
                block = block - block.mean(dim=1, keepdim=True)
            mean_square = block.square().sum(dim=-1).mean(dim=1, keepdim=True)  # [n, 1]
            block = block / torch.sqrt(mean_square + self.eps).unsqueeze(-1) * self.scales[i].unsqueeze(-1)
            if degree == 0 and self.bias is not None:
                block = block + self.bias.unsqueeze(-1)
            out.append(block.reshape(n, -1))
        return torch.cat(out, dim=-1)


class NodeTensorProduct(nn.Module):
    """Equivariant product of a node's features with themselves: ``tp(lin_a(x), lin_b(x))`` mapped back
    to ``irreps`` by a linear layer (MACE's many-body product, at correlation order 2 per layer).

    Both factors are projected to ``channels`` copies of every degree l = 0..lmax (parity (-1)^l); the
    product couples each channel with itself over every path (l1, l2) -> l3 allowed by the
    Clebsch-Gordan rules and parity, with one learned weight per path and channel. Cost per atom,
    not per pair.

    Input and output: [n_atoms, irreps.dim].
    """

    def __init__(self, irreps: o3.Irreps, channels: int) -> None:
        super().__init__()
        irreps = o3.Irreps(irreps)
        if channels < 1:
            raise ValueError(f"node product channels must be >= 1, got {channels}")
        lmax = max(ir.l for _, ir in irreps)
        uniform = o3.Irreps([(channels, (degree, (-1) ** degree)) for degree in range(lmax + 1)])
        instructions = [
            (i1, i2, i_out, "uuu", True)
            for i1, (_, ir1) in enumerate(uniform)
            for i2, (_, ir2) in enumerate(uniform)
            for i_out, (_, ir_out) in enumerate(uniform)
            if ir_out in ir1 * ir2
        ]
        self.lin_a = o3.Linear(irreps, uniform)
        self.lin_b = o3.Linear(irreps, uniform)
        saved = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # exact Clebsch-Gordan constants; the model's dtype casts them
        try:
            self.product = o3.TensorProduct(uniform, uniform, uniform, instructions)
        finally:
            torch.set_default_dtype(saved)
        self.lin_out = o3.Linear(uniform, irreps)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin_out(self.product(self.lin_a(x), self.lin_b(x)))
