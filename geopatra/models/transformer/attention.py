"""Global geometric attention: every atom attends to every atom of its molecule.

Attention of receiving atom i to atom j (same molecule), per head h:

    logit_ijh = (q_ih . (phi_h(r_ij) * k_jh)) / sqrt(d) + b_h(r_ij) - gamma_h r_ij     (invariant)
    alpha_ijh = env(r_ij) exp(logit_ijh) / (sum_j' env(r_ij') exp(logit_ij'h) [+ exp(s_h)])  (softmax [sink])
           or env(r_ij) silu(logit_ijh) / n_i                                            (silu, n_i senders)
    m_i       = sum_k c_k * sum_j alpha_ijh  TP(v_j, Y(r_ij / |r_ij|); w_hkl(r_ij))   (channels of head h)

``q`` and ``k`` are linear in the scalar features (with ``qk_norm``, then layer-normalised per head);
``gamma_h >= 0`` is a learned distance decay per head (initialised from 0.1 to 3 per Å over the heads,
so some heads start local and some global); ``phi``
(a distance filter: one scalar per head, or one per query/key channel with
``logit_filter="channel"``), ``b`` (a distance bias) and ``w`` come from a network of a radial basis
with no cutoff. The softmax may have a learned null key s_h per head (``"softmax_sink"``: the weights
can all go to zero); ``"silu"`` is unnormalised. ``env`` is 1 for the global model and a cosine
envelope (exactly 0 beyond) when a ``cutoff`` is set. The values ``v`` are the node features,
optionally after a per-irrep linear projection (``value_projection``). The radial weights ``w``
have ``radial_rank`` = K learned radial functions per head and degree; each output channel mixes them
with its own coefficients ``c_k`` (per channel and coupling path), a low-rank form of per-channel
radial weights that keeps the sum over senders ahead of the tensor-product coupling. Atoms do not
attend to themselves; pairs of different molecules and padding get exactly zero weight.

Two pair layouts (see :class:`PairGeometry`): *dense*, all pairs of a zero-padded batch [B, N, N]
(the global model), and *neighbour lists*, [n_atoms, 1, K] pairs with the K senders of each receiver
(a model with a cutoff, so its cost grows with the number of pairs within the cutoff, not N^2).
Receivers are processed in chunks of at most ``pair_chunk_size`` pairs; with more than one chunk and
gradients on, each chunk is recomputed in the backward pass (activation checkpointing), so memory
grows with the chunk size, not with N^2.

For analysis, :meth:`GeometricAttention.attention_weights` (and ``GeoPaTra.attention_weights`` for all
layers) recomputes the weights alpha as a dense matrix; the forward pass never stores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from e3nn import o3
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from geopatra.models.transformer.pointwise import irrep_blocks
from geopatra.models.transformer.radial import RadialMLP


@dataclass(frozen=True)
class PairGeometry:
    """Pair data (i receives, j sends) in one of two layouts, written [P, c, M] below:

    * dense (``neighbors is None``): [B, N, N] for B molecules zero-padded to N atoms;
      ``flat_index`` [n_atoms] places each atom in the flattened [B * N] padding.
    * neighbour lists: [n_atoms, 1, K], the K (padded) senders ``neighbors`` [n_atoms, K] (atom
      indices) of each receiver.

    Attributes:
        distance: |r_j - r_i| [P, c, M], Å.
        basis: radial basis of the distances [P, c, M, num_rbf].
        sh: spherical harmonics of the unit vector (r_j - r_i)/|r_j - r_i| [P, c, M, sh_dim]
            (only the l = 0 component is non-zero for zero-length pairs).
        mask: True for pairs of distinct real atoms of one molecule (within the cutoff) [P, c, M].
        envelope: attention envelope [P, c, M] in [0, 1] when a cutoff is set, else None.
        flat_index, num_graphs, n_max: the dense padding (used by the dense layout).
        neighbors: sender atom indices [n_atoms, K] (neighbour-list layout), else None.
    """

    distance: Tensor
    basis: Tensor
    sh: Tensor
    mask: Tensor
    envelope: Tensor | None
    flat_index: Tensor
    num_graphs: int
    n_max: int
    neighbors: Tensor | None = None

    def per_atom(self, rows: Tensor) -> Tensor:
        """Per-receiver rows in this layout ([B, N, ...] dense, [n_atoms, 1, ...] neighbour lists) as
        [n_atoms, ...], in atom order (padding dropped)."""
        if self.neighbors is None:
            return rows.reshape(self.num_graphs * self.n_max, *rows.shape[2:])[self.flat_index]
        return rows[:, 0]


def to_dense(x: Tensor, flat_index: Tensor, num_graphs: int, n_max: int) -> Tensor:
    """Scatter per-atom rows [n_atoms, ...] into a zero-padded [num_graphs, n_max, ...] tensor."""
    dense = x.new_zeros((num_graphs * n_max, *x.shape[1:]))
    dense = dense.index_copy(0, flat_index, x)
    return dense.view((num_graphs, n_max, *x.shape[1:]))


def coupling_paths(irreps_node: o3.Irreps, lmax_sh: int) -> list[tuple[int, int, int]]:
    """Tensor-product paths (index of the node irrep block, l2, l3) of node features x spherical
    harmonics up to ``lmax_sh`` whose output irrep (l3 with parity (-1)^(l1 + l2)) exists in
    ``irreps_node`` (so messages can be mapped back to node features)."""
    targets = {ir for _, ir in irreps_node}
    paths = []
    for i1, (_, ir1) in enumerate(irreps_node):
        for l2 in range(lmax_sh + 1):
            for ir_out in ir1 * o3.Irrep(l2, (-1) ** l2):
                if ir_out in targets:
                    paths.append((i1, l2, ir_out.l))
    return paths


class GeometricAttention(nn.Module):
    """One multi-head global attention update.

    The values are the e3nn tensor products x_j (x) Y(r_ij) of the sender features with the spherical
    harmonics of the pair direction, coupled to degree l3 by Clebsch-Gordan coefficients
    (``o3.wigner_3j``). Attention and the radial weight (per head and harmonic degree l2) are
    scalars per pair, so the sum over senders j is done before the (linear) coupling:
    ``T_i = sum_j alpha_ij w_ij Y(r_ij) x_j`` is one batched matrix product, and only node-sized
    tensors are coupled. Pair-sized memory is O(heads * (lmax + 1)^2) per pair instead of
    O(features).

    ``dropout``: in training, each weight alpha_ijh is zeroed with this probability and the others are
    divided by 1 - dropout (Equiformer's attention dropout); evaluation uses all weights.

    Input: node features x [n_atoms, irreps_node.dim] and a :class:`PairGeometry`.
    Output: update [n_atoms, irreps_node.dim] (to be added to x).
    """

    def __init__(
        self,
        irreps_node: o3.Irreps,
        lmax_sh: int,
        num_heads: int,
        num_rbf: int,
        radial_hidden: int,
        pair_chunk_size: int | None,
        radial_rank: int = 1,
        value_projection: bool = False,
        logit_filter: Literal["head", "channel"] = "head",
        normalization: Literal["softmax", "softmax_sink", "silu"] = "softmax",
        qk_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout
        if radial_rank < 1:
            raise ValueError(f"radial_rank must be >= 1, got {radial_rank}")
        if logit_filter not in ("head", "channel"):
            raise ValueError(f"logit_filter must be 'head' or 'channel', got {logit_filter!r}")
        if normalization not in ("softmax", "softmax_sink", "silu"):
            raise ValueError(f"normalization must be 'softmax', 'softmax_sink' or 'silu', got {normalization!r}")
        self.radial_rank, self.logit_filter, self.normalization = radial_rank, logit_filter, normalization
        self.irreps_node = o3.Irreps(irreps_node)
        self._blocks = irrep_blocks(self.irreps_node)  # plain ints: forward touches no e3nn Irreps
        self.num_scalars = self.irreps_node[0].mul
        for mul, ir in self.irreps_node:
            if mul % num_heads != 0:
                raise ValueError(f"multiplicity {mul} of {ir} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = self.num_scalars // num_heads
        if qk_norm and self.head_dim < 2:
            raise ValueError(f"qk_norm needs >= 2 scalar channels per head (a layer norm of one channel is "
                             f"constant), got {self.num_scalars} over {num_heads} heads")
        self.lmax_sh = lmax_sh
        self.pair_chunk_size = pair_chunk_size
        self.norm = nn.LayerNorm(self.num_scalars)
        self.query = nn.Linear(self.num_scalars, self.num_scalars)
        self.key = nn.Linear(self.num_scalars, self.num_scalars)
        # per-head layer norms of queries and keys: |q . k| / sqrt(d) <= sqrt(d) g_q g_k (their gains), a bound
        # on the content logits against the growth that collapses the softmax at a large step
        self.query_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        self.key_norm = nn.LayerNorm(self.head_dim) if qk_norm else None
        # 0.1 to 3 per Å: the most local head starts focused on bonded neighbours, the widest sees the molecule
        decay = torch.logspace(math.log10(0.1), math.log10(3.0), num_heads) if num_heads > 1 else torch.tensor([0.5])
        self.decay_raw = nn.Parameter(torch.log(torch.expm1(decay)))  # softplus^-1: gamma = softplus(raw) [1/Å]
        n_l2 = lmax_sh + 1
        n_filter = num_heads * (self.head_dim if logit_filter == "channel" else 1)
        self._radial_split = [n_filter, num_heads, num_heads * radial_rank * n_l2]  # filter, bias, weights
        self.radial = RadialMLP(num_rbf, radial_hidden, sum(self._radial_split))
        # the null key's logit per head (softmax_sink): its weight is what the real senders do not take
        self.sink_logit = nn.Parameter(torch.zeros(num_heads)) if normalization == "softmax_sink" else None
        self.value = o3.Linear(self.irreps_node, self.irreps_node) if value_projection else None
        sh_dim = (lmax_sh + 1) ** 2
        # [n_l2, sh_dim] 0/1 matrix copying the weight of degree l2 onto its 2 l2 + 1 components
        expand = torch.zeros(n_l2, sh_dim)
        for l2 in range(n_l2):
            expand[l2, l2 * l2 : (l2 + 1) ** 2] = 1.0
        self.register_buffer("expand_l2", expand, persistent=False)

        paths = coupling_paths(self.irreps_node, lmax_sh)
        irreps_msg, self._path_widths = [], []  # per node block: the columns 2 l3 + 1 of each of its paths
        for i1, (mul, ir1) in enumerate(self.irreps_node):
            m1 = ir1.dim
            block_paths = [p for p in paths if p[0] == i1]
            n_cols = sum(2 * l3 + 1 for _, _, l3 in block_paths)
            coupling = torch.zeros(m1, sh_dim, n_cols, dtype=torch.float64)  # exact; cast with the model
            col = 0
            for _, l2, l3 in block_paths:
                cg = o3.wigner_3j(ir1.l, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1)  # [m1, m2, m3]
                coupling[:, l2 * l2 : (l2 + 1) ** 2, col : col + 2 * l3 + 1] = cg
                irreps_msg.append((mul, (l3, ir1.p * (-1) ** l2)))
                col += 2 * l3 + 1
            self._path_widths.append([2 * l3 + 1 for _, _, l3 in block_paths])
            # rows ordered (m1, sh component) to match the layout of the aggregated products
            self.register_buffer(f"coupling_{i1}", coupling.reshape(m1 * sh_dim, -1), persistent=False)
        self.irreps_msg = o3.Irreps(irreps_msg)
        # holds the weights (e3nn's layout); applied path by path in :meth:`_linear_out` from these plain
        # (input path, output block, weight shape, normalisation) tuples of its instructions
        self.linear_out = o3.Linear(self.irreps_msg, self.irreps_node)
        if any(ins.i_in < 0 for ins in self.linear_out.instructions):
            raise ValueError("linear_out must have no biases")
        self._linear_out_paths = [(ins.i_in, ins.i_out, tuple(ins.path_shape), float(ins.path_weight))
                                  for ins in self.linear_out.instructions]
        # per path, rank K and output channel: the mixing coefficients of the K radial functions
        self.rank_coefficients = None
        if radial_rank > 1:
            self.rank_coefficients = nn.ParameterList(
                nn.Parameter(torch.randn(radial_rank, mul) / math.sqrt(radial_rank)) for mul, _ in self.irreps_msg
            )

    def queries_and_keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Queries and keys [n_atoms, H, d] from the (layer-normalised) scalar features of x; with
        ``qk_norm`` each head's query and key are layer-normalised too."""
        shape = (x.shape[0], self.num_heads, self.head_dim)
        s = self.norm(x[:, : self.num_scalars])
        q, k = self.query(s).view(shape), self.key(s).view(shape)
        if self.query_norm is not None:
            q, k = self.query_norm(q), self.key_norm(k)
        return q, k

    def forward(self, x: Tensor, geometry: PairGeometry) -> Tensor:
        n, H = x.shape[0], self.num_heads
        q, k = self.queries_and_keys(x)
        values = x if self.value is None else self.value(x)
        # sender features, heads split off the channels of every irrep block: [n, H, dim / H]
        blocks = values.split([mul * dim for mul, _, dim, _ in self._blocks], dim=-1)
        senders = torch.cat([block.reshape(n, H, -1) for block in blocks], dim=-1)
        g = geometry
        if g.neighbors is None:  # dense: chunks of receivers of every molecule at once
            B, N = g.num_graphs, g.n_max
            q, k, senders = (to_dense(t, g.flat_index, B, N) for t in (q, k, senders))
            step = N if self.pair_chunk_size is None else max(1, self.pair_chunk_size // max(1, B * N))
            function, total, dim = self._chunk, N, 1
        else:  # neighbour lists: chunks of receivers, K pairs each
            step = n if self.pair_chunk_size is None else max(1, self.pair_chunk_size // g.neighbors.shape[1])
            q = q.unsqueeze(1)
            function, total, dim = self._neighbor_chunk, n, 0
        use_checkpoint = step < total and torch.is_grad_enabled()
        outs = []
        for start in range(0, total, step):
            sl = (slice(None),) * dim + (slice(start, min(total, start + step)),)
            pair = [t if t is None else t[sl] for t in (g.distance, g.basis, g.sh, g.mask, g.envelope)]
            if dim == 0:
                args = (q[sl], k, senders, g.neighbors[sl], *pair)
            else:
                args = (q[sl], k, senders, *pair)
            outs.append(checkpoint(function, *args, use_reentrant=False) if use_checkpoint else function(*args))
        return g.per_atom(torch.cat(outs, dim=dim))

    @torch.no_grad()
    def attention_weights(self, x: Tensor, geometry: PairGeometry) -> Tensor:
        """The weights alpha_ijh this layer uses for node features x [n_atoms, irreps_node.dim], as a
        dense [n_atoms, n_atoms, H] tensor over all atoms of the batch. With a softmax, row i
        (receiver) sums to 1 over the senders j of its molecule (0 for an atom with no sender, e.g.
        alone within a cutoff); with a sink, to at most 1; with SiLU the weights are unnormalised.
        Self pairs, pairs of different molecules and pairs beyond the cutoff are 0.

        For analysis only (one pass over all pairs, no chunking, no gradient); :meth:`forward`
        computes the same weights chunk by chunk and never stores them.
        """
        g = geometry
        n = x.shape[0]
        q, k = self.queries_and_keys(x)
        out = x.new_zeros(n, n, self.num_heads)
        if g.neighbors is None:
            B, N = g.num_graphs, g.n_max
            q, k = (to_dense(t, g.flat_index, B, N) for t in (q, k))
            alpha, _ = self._weights(q, k, g.distance, g.basis, g.mask, g.envelope)  # [B, N, N, H]
            atom_of_slot = torch.full((B * N,), -1, dtype=torch.long, device=x.device)
            atom_of_slot[g.flat_index] = torch.arange(n, device=x.device)
            molecule, slot = g.flat_index // N, g.flat_index % N
            rows = alpha[molecule, slot]  # [n, N, H]: receiver atoms, sender slots of their molecule
            senders = atom_of_slot.view(B, N)[molecule]  # [n, N]
        else:
            alpha, _ = self._weights(
                q.unsqueeze(1), k[g.neighbors], g.distance, g.basis, g.mask, g.envelope
            )  # [n, 1, K, H]
            rows, senders = alpha[:, 0], g.neighbors
            senders = torch.where(g.mask[:, 0], senders, torch.full_like(senders, -1))
        receivers = torch.arange(n, device=x.device).unsqueeze(1).expand_as(senders)
        real = senders >= 0
        out[receivers[real], senders[real]] = rows[real]
        return out

    def _neighbor_chunk(self, q: Tensor, k: Tensor, senders: Tensor, neighbors: Tensor, *pair: Tensor | None) -> Tensor:
        """:meth:`_chunk` for rows of the neighbour-list layout: gathers keys and sender features
        [rows, K, H, ...] of the receivers' neighbours ``neighbors`` [rows, K] (inside a checkpoint)."""
        return self._chunk(q, k[neighbors], senders[neighbors], *pair)

    def _chunk(
        self,
        q: Tensor,
        k: Tensor,
        senders: Tensor,
        r: Tensor,
        basis: Tensor,
        sh: Tensor,
        mask: Tensor,
        env: Tensor | None,
    ) -> Tensor:
        """Updates [B, c, irreps_node.dim] of c receivers; q [B, c, H, d], k [B, N, H, d], senders
        [B, N, H, dim / H] (as in :meth:`forward`), r [B, c, N] (Å), basis [B, c, N, R], sh [B, c, N, S],
        mask [B, c, N], env [B, c, N] or None."""
        B, c, N, _ = basis.shape
        H, K = self.num_heads, self.radial_rank
        alpha, weights = self._weights(q, k, r, basis, mask, env)
        # attention dropout (training only): the energy of one forward has one mask, so the forces,
        # its gradient, stay exact; a checkpointed chunk restores the RNG state in its recomputation
        alpha = nn.functional.dropout(alpha, self.dropout, self.training)

        # per pair, head, rank and sh component: alpha_h * w_{h, k, l2(m)} * Y_m  [B, c, N, H, K, S]
        weights = weights.reshape(B, c, N, H, K, self.lmax_sh + 1) * alpha[..., None, None]
        g = (weights @ self.expand_l2) * sh[:, :, :, None, None, :]
        t = torch.einsum("bijhks,bjhf->bihkfs", g, senders)  # [B, c, H, K, dim / H, S]
        S = sh.shape[-1]
        out = []
        # torch.split into irrep blocks and paths, never slices: the backward of each slice fills and adds
        # a zero tensor of the whole (experiments/results/step_time.md)
        widths = [(mul // H) * dim for mul, _, dim, _ in self._blocks]
        for i1, ((mul, _, dim, _), t_block) in enumerate(zip(self._blocks, t.split(widths, dim=4))):
            t_block = t_block.reshape(B, c, H, K, mul // H, dim * S)
            t_block = t_block.transpose(2, 3).reshape(B, c, K, mul, dim * S)  # (u, (m1, s)) per rank
            coupling = getattr(self, f"coupling_{i1}").to(t_block.dtype)
            # [B, c, K, mul, 2 l3 + 1] per path of this block
            out.extend((t_block @ coupling).split(self._path_widths[i1], dim=-1))
        if self.rank_coefficients is None:
            pieces = [piece[:, :, 0] for piece in out]
        else:
            pieces = [(piece * coefficients.unsqueeze(-1)).sum(dim=2)
                      for piece, coefficients in zip(out, self.rank_coefficients)]
        return self._linear_out(pieces)

    def _linear_out(self, pieces: list[Tensor]) -> Tensor:
        """``linear_out`` of the messages given path by path, ``pieces[p]`` [..., mul_p, 2 l3 + 1] (the
        blocks of ``irreps_msg``), as [..., irreps_node.dim]: the same map as ``linear_out`` of their
        concatenation, without the concatenation and its per-block slicing (see :meth:`_chunk`)."""
        weights = self.linear_out.weight.split([math.prod(shape) for _, _, shape, _ in self._linear_out_paths])
        outputs: list[Tensor | None] = [None] * len(self._blocks)
        for (i_in, i_out, shape, path_weight), weight in zip(self._linear_out_paths, weights):
            y = path_weight * torch.einsum("...ui,uw->...wi", pieces[i_in], weight.view(shape))
            outputs[i_out] = y if outputs[i_out] is None else outputs[i_out] + y
        lead = pieces[0].shape[:-2]
        return torch.cat([
            (y if y is not None else pieces[0].new_zeros(*lead, mul, dim)).flatten(-2)
            for y, (mul, _, dim, _) in zip(outputs, self._blocks)
        ], dim=-1)

    def _weights(
        self, q: Tensor, k: Tensor, r: Tensor, basis: Tensor, mask: Tensor, env: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Attention weights alpha [B, c, N, H] (shapes as in :meth:`_chunk`) and the radial
        tensor-product weights [B, c, N, H * K * (lmax + 1)] of the same pairs."""
        H, d = self.num_heads, self.head_dim
        filt, bias, weights = torch.split(self.radial(basis), self._radial_split, dim=-1)
        if self.logit_filter == "channel":
            qk = torch.einsum("bihd,bjhd,bijhd->bijh", q, k, filt.unflatten(-1, (H, d))) / math.sqrt(d)
        else:
            qk = filt * torch.einsum("bihd,bjhd->bijh", q, k) / math.sqrt(d)
        decay = nn.functional.softplus(self.decay_raw)  # [H], 1/Å
        logits = qk + bias - decay * r.unsqueeze(-1)  # [B, c, N, H]
        valid = mask.unsqueeze(-1).expand_as(logits)
        zeros = torch.zeros_like(logits)
        if self.normalization == "silu":
            count = valid.sum(dim=2, keepdim=True).clamp(min=1).to(logits.dtype)
            alpha = torch.where(valid, nn.functional.silu(torch.where(valid, logits, zeros)), zeros) / count
        else:
            # Stable masked softmax over j; the max is detached (softmax is shift invariant) and taken
            # over valid pairs (and the sink) only, so masked pairs get exactly zero weight and gradient.
            row_max = torch.where(valid, logits, torch.full_like(logits, float("-inf"))).amax(dim=2, keepdim=True)
            if self.sink_logit is not None:
                row_max = torch.maximum(row_max, self.sink_logit.to(logits.dtype))
            row_max = row_max.detach()
            row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
            e = torch.where(valid, torch.exp(torch.where(valid, logits - row_max, zeros)), zeros)
            if env is not None:  # inside the normalisation: pairs enter and leave the cutoff smoothly
                e = e * env.unsqueeze(-1)
            denom = e.sum(dim=2, keepdim=True)
            if self.sink_logit is not None:
                has_sender = valid.any(dim=2, keepdim=True)
                denom = denom + torch.where(has_sender, torch.exp(self.sink_logit - row_max), torch.zeros_like(denom))
            alpha = e / torch.where(denom > 0, denom, torch.ones_like(denom))
            return alpha, weights
        if env is not None:
            alpha = alpha * env.unsqueeze(-1)
        return alpha, weights
