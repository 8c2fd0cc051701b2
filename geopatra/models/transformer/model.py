"""GeoPaTra: a global geometric-attention E(3)-equivariant transformer for whole molecules.

After Frank & Chmiela (2021), "Detect the interactions that matter in matter: geometric attention for
many-body systems" (arXiv:2106.02549). Every atom attends to every atom of its molecule with no
cutoff, so couplings across the whole molecule (e.g. a donor and an acceptor 15 Å apart) can be
learned. Features are e3nn irreps (scalars plus l = 1..lmax), so the energy is invariant under
rotations, reflections and translations and the forces (-dE/dR, see
:func:`geopatra.models.forces.energy_and_forces`) are equivariant.

Units: positions Å, energies kcal/mol (forces kcal/mol/Å).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal

import e3nn
import numpy as np
import torch
from e3nn import o3
from torch import Tensor, nn

from geopatra.data.dataset import MolecularDataset
from geopatra.errors import DataError, ElementError
from geopatra.models.potential import Potential
from geopatra.models.transformer.attention import GeometricAttention, PairGeometry, to_dense
from geopatra.models.transformer.density import AtomicDensity
from geopatra.models.transformer.embedding import AtomEmbedding, hidden_irreps
from geopatra.models.transformer.pointwise import EquivariantLayerNorm, GatedFeedForward, NodeTensorProduct
from geopatra.models.transformer.radial import (
    BesselRBF,
    GaussianRBF,
    cosine_envelope,
    safe_distance_and_direction,
)
from geopatra.models.transformer.readout import ScalarReadout, fit_element_shifts, force_rms

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class GeoPaTra(Potential):
    """Global-attention equivariant transformer: ``forward(pos, z, batch, num_graphs) -> E``.

    Args:
        num_features: scalar (0e) channels per atom; also the query/key width.
        num_tensor_features: channels per degree l = 1..lmax (parity (-1)^l).
        lmax: highest degree of the features and of the pair spherical harmonics.
        num_layers: attention + feed-forward layers.
        num_heads: attention heads (must divide ``num_features`` and ``num_tensor_features``).
        num_rbf: functions of the radial basis. The Gaussian basis is fine at bond lengths (64: spacing
            about 0.1 Å at 1.1 Å) and learns stiff bond stretches fast but overfits small training sets;
            the smooth Bessel basis generalises better from few frames (shortest wavelength
            2 rbf_max / num_rbf): experiments/results/overfit_probe.md.
        rbf_max: range [Å] resolved by the radial basis, [0, rbf_max]. There is no cutoff: pairs
            further apart still attend to each other (with the filter's long-distance limit). Set it
            to about the largest interatomic distance of the target molecules (``geopatra summary``
            prints it; 20 Å covers MD22's peptides and DHA; the buckyball catcher and nanotubes
            extend further), and ``num_rbf`` to keep the resolution: a basis far wider than the
            molecule fits small molecules worse (experiments/results/overfit_probe.md, variant 27).
        radial_hidden: hidden width of the radial network.
        cutoff: if set [Å], attention weights are multiplied by a cosine envelope that is exactly
            zero beyond ``cutoff``: a local model, for the long-range ablation only.
        max_z: largest atomic number the embedding and shift tables have room for.
        pair_chunk_size: at most this many (receiver, sender) pairs are processed at once; larger
            molecules are split over receivers (and recomputed in backward), bounding memory.
            ``None`` processes all pairs at once.
        sparse_cutoff: with a ``cutoff``, process only the pairs within it (neighbour lists, cost
            proportional to their number); False masks the full pair matrix instead (same result,
            O(N^2) cost). Ignored without a cutoff.
        dtype: parameter and computation precision, "float32" or "float64" (torch's global
            default dtype is never changed).
        radial_rank: learned radial functions per head and degree on the value path, mixed per
            output channel (1: one radial weight per head and degree).
        value_projection: a per-irrep linear map of the sender features before attention.
        logit_filter: the distance filter of the attention logits, one scalar per ``"head"`` or one
            per query/key ``"channel"``.
        attention_normalization: ``"softmax"``, ``"softmax_sink"`` (a learned null key per head, so the
            weights can all vanish) or ``"silu"`` (unnormalised). None of them has a cutoff.
        qk_norm: a layer norm per head on the queries and on the keys, so that the content part of the
            attention logits cannot grow with the size of the projections (the growth that collapses
            the softmax to one sender and diverges training at a large learning rate).
        node_invariants: feed the squared norms of each atom's l > 0 channels to its feed-forward.
        equivariant_norm: an equivariant layer norm before attention and before the feed-forward.
        node_product: channels of a node-level tensor product of each atom's features with themselves
            (:class:`NodeTensorProduct`) added to the feed-forward's input in every layer, so that
            products of the attention messages (many-body terms) reach the gates; 0: none.
        radial_basis: ``"gaussian"`` (:class:`GaussianRBF`: log-spaced, fine at bond lengths) or
            ``"bessel"`` (:class:`BesselRBF`: smooth, uniform in r, zero beyond ``rbf_max``).
        layer_readouts: add a linear energy readout of the scalars after every layer but the last
            (as MACE does), so the early, low-body-order features reach the energy directly. They
            start at zero: the initial model is the one without them.
        density_embedding: add each atom's atomic density of all other atoms (per-channel radial
            functions times spherical harmonics, :class:`AtomicDensity`) to its first features. It
            starts at zero: the initial model is the one without it.
        attention_dropout: probability with which each attention weight is dropped in training
            (:class:`GeometricAttention`); 0: none.
        drop_path: stochastic depth: in training, each residual update (attention, feed-forward) of
            each molecule is dropped with this probability and otherwise divided by 1 - drop_path
            (Equiformer's drop path); 0: none. Evaluation uses every update. Both regularisers:
            experiments/results/overfit_probe.md (variants 68-69).

    Step and energy + force times of the options: experiments/results/geopatra_ablation.md.

    Buffers (saved in ``state_dict``): ``energy_shift`` [max_z + 1] kcal/mol, ``energy_scale`` []
    kcal/mol/Å, ``seen_elements`` [max_z + 1] bool, all set by :meth:`fit_to_data`.
    """

    trainable: ClassVar[bool] = True
    kind: ClassVar[str] = "geopatra"
    multi_molecule: ClassVar[bool] = True
    has_per_atom_energy: ClassVar[bool] = True

    def __init__(
        self,
        num_features: int = 64,
        num_tensor_features: int = 16,
        lmax: int = 2,
        num_layers: int = 3,
        num_heads: int = 4,
        num_rbf: int = 64,
        rbf_max: float = 20.0,
        radial_hidden: int = 32,
        cutoff: float | None = None,
        max_z: int = 118,
        pair_chunk_size: int | None = 32768,
        sparse_cutoff: bool = True,
        dtype: Literal["float32", "float64"] = "float32",
        radial_rank: int = 1,
        value_projection: bool = False,
        logit_filter: Literal["head", "channel"] = "head",
        attention_normalization: Literal["softmax", "softmax_sink", "silu"] = "softmax",
        qk_norm: bool = False,
        node_invariants: bool = False,
        equivariant_norm: bool = False,
        radial_basis: Literal["gaussian", "bessel"] = "gaussian",
        node_product: int = 0,
        layer_readouts: bool = False,
        density_embedding: bool = False,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if cutoff is not None and not cutoff > 0:
            raise ValueError(f"cutoff must be > 0 Å or None, got {cutoff}")
        if pair_chunk_size is not None and pair_chunk_size < 1:
            raise ValueError(f"pair_chunk_size must be >= 1 or None, got {pair_chunk_size}")
        if max_z < 1:
            raise ValueError(f"max_z must be >= 1, got {max_z}")
        if node_product < 0:
            raise ValueError(f"node_product must be >= 0 channels, got {node_product}")
        if radial_basis not in ("gaussian", "bessel"):
            raise ValueError(f"radial_basis must be 'gaussian' or 'bessel', got {radial_basis!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        with _traceable_e3nn():  # e3nn modules as fx graphs, which torch.compile can trace
            self.max_z = max_z
            self.drop_path = drop_path
            self.cutoff = None if cutoff is None else float(cutoff)
            self.sparse_cutoff = sparse_cutoff
            self.irreps_node = hidden_irreps(num_features, num_tensor_features, lmax)
            self.irreps_sh = o3.Irreps.spherical_harmonics(lmax)
            self.spherical_harmonics = o3.SphericalHarmonics(self.irreps_sh, normalize=False, normalization="component")
            self.num_features = num_features
            self.embedding = AtomEmbedding(self.irreps_node, max_z)
            self.density = AtomicDensity(self.irreps_node, num_rbf, radial_hidden, max_z) if density_embedding else None
            self.rbf = GaussianRBF(num_rbf, rbf_max) if radial_basis == "gaussian" else BesselRBF(num_rbf, rbf_max)
            self.attention = nn.ModuleList(
                GeometricAttention(
                    self.irreps_node, lmax, num_heads, num_rbf, radial_hidden, pair_chunk_size,
                    radial_rank=radial_rank, value_projection=value_projection, logit_filter=logit_filter,
                    normalization=attention_normalization, qk_norm=qk_norm, dropout=attention_dropout,
                )
                for _ in range(num_layers)
            )
            self.feed_forward = nn.ModuleList(
                GatedFeedForward(self.irreps_node, node_invariants=node_invariants) for _ in range(num_layers)
            )
            self.node_product = nn.ModuleList(
                NodeTensorProduct(self.irreps_node, node_product) for _ in range(num_layers if node_product else 0)
            )

            def norm() -> nn.Module:
                return EquivariantLayerNorm(self.irreps_node) if equivariant_norm else nn.Identity()

            self.norm_attention = nn.ModuleList(norm() for _ in range(num_layers))
            self.norm_feed_forward = nn.ModuleList(norm() for _ in range(num_layers))
            self.readout = ScalarReadout(num_features, max(1, num_features // 2))
            self.layer_readouts = nn.ModuleList(
                _zero_linear(num_features) for _ in range(num_layers - 1 if layer_readouts else 0)
            )
            self.register_buffer("energy_scale", torch.ones(()))
            self.register_buffer("seen_elements", torch.ones(max_z + 1, dtype=torch.bool))
        self.to(_DTYPES[dtype])
        # float64 whatever the model dtype: absolute energies (e.g. -620,000 kcal/mol for MD22) lose
        # 0.06 kcal/mol to float32 rounding; the learned part is small and stays in the model dtype.
        self.register_buffer("energy_shift", torch.zeros(max_z + 1, dtype=torch.float64))

    # ------------------------------------------------------------------ prediction
    def forward(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int,
                layout: tuple[Tensor, int] | None = None) -> Tensor:
        """Energies [num_graphs] in kcal/mol of molecules given by positions [n_atoms, 3] (Å),
        atomic numbers [n_atoms] and molecule index ``batch`` [n_atoms] (sorted, 0..num_graphs-1).
        ``layout``: :meth:`batch_layout` of ``batch`` when computed beforehand (a compiled forward)."""
        atom_energy = self.per_atom_energy(pos, z, batch, num_graphs, layout)
        return atom_energy.new_zeros(num_graphs).index_add(0, batch, atom_energy)

    def per_atom_energy(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int,
                        layout: tuple[Tensor, int] | None = None) -> Tensor:
        """Per-atom energies [n_atoms] in kcal/mol, float64 (they sum to :meth:`forward` per molecule)."""
        pos = pos.to(self.energy_scale.dtype)
        geometry = self.pair_geometry(pos, batch, num_graphs, layout)
        x = self.initial_features(z, geometry)
        readout = x.new_zeros(x.shape[0])
        for layer in range(len(self.attention)):
            x = self._layer(layer, x, geometry)
            if layer < len(self.layer_readouts):
                readout = readout + self.layer_readouts[layer](x[:, : self.num_features]).squeeze(-1)
        readout = readout + self.readout(x[:, : self.num_features])
        return (self.energy_scale * readout).double() + self.energy_shift[z]

    @torch.no_grad()
    def attention_weights(self, pos: Tensor, z: Tensor) -> Tensor:
        """Attention weights of one molecule, for analysis: [num_layers, num_heads, N, N].

        Entry (l, h, i, j) is the weight alpha_ijh with which atom i (receiver) attends to atom j in
        head h of layer l; each row sums to 1 over j (an atom with no sender within a cutoff has a
        zero row) and the diagonal is 0. Atom order is that of ``z``.

        Args:
            pos: positions [N, 3], Å.
            z: atomic numbers [N].
        """
        pos = pos.to(self.energy_scale.dtype)
        batch = torch.zeros(len(z), dtype=torch.long, device=pos.device)
        geometry = self.pair_geometry(pos, batch, 1)
        x = self.initial_features(z, geometry)
        weights = []
        for layer, attention in enumerate(self.attention):
            weights.append(attention.attention_weights(self.norm_attention[layer](x), geometry).permute(2, 0, 1))
            x = self._layer(layer, x, geometry)
        return torch.stack(weights)

    def initial_features(self, z: Tensor, geometry: PairGeometry) -> Tensor:
        """Features [n_atoms, irreps_node.dim] entering the first layer: the element embedding, plus the
        atomic density of the other atoms (:class:`AtomicDensity`) with ``density_embedding``."""
        x = self.embedding(z)
        return x if self.density is None else x + self.density(z, geometry)

    def _layer(self, layer: int, x: Tensor, geometry: PairGeometry) -> Tensor:
        """One residual attention + feed-forward layer (pre-norm when ``equivariant_norm``; the node
        product, if any, added to the feed-forward's input)."""
        x = x + self._drop_path(self.attention[layer](self.norm_attention[layer](x), geometry), geometry)
        h = self.norm_feed_forward[layer](x)
        if len(self.node_product) > 0:
            h = h + self.node_product[layer](h)
        return x + self._drop_path(self.feed_forward[layer](h), geometry)

    def _drop_path(self, update: Tensor, geometry: PairGeometry) -> Tensor:
        """A residual ``update`` [n_atoms, dim], in training zeroed per molecule with probability
        ``drop_path`` and otherwise divided by 1 - drop_path; unchanged in evaluation."""
        if not self.training or self.drop_path == 0.0:
            return update
        keep = 1.0 - self.drop_path
        kept = torch.rand(geometry.num_graphs, device=update.device) < keep  # [num_graphs]
        molecule = geometry.flat_index // geometry.n_max  # [n_atoms]
        return update * (kept[molecule].to(update.dtype) / keep).unsqueeze(-1)

    def validation_diagnostics(self, pos: Tensor, z: Tensor, batch: Tensor) -> dict[str, float]:
        """Effective number of senders exp(H_i) per layer and head, H_i the entropy of receiver i's
        attention weights (renormalised to sum 1), averaged over the atoms of the batch's first
        molecule: ``attn_senders_l<layer>_h<head>`` (1: attends to one atom; N - 1: uniform)."""
        first = batch == batch[0]
        weights = self.attention_weights(pos[first].detach(), z[first]).double().clamp(min=0)  # [L, H, N, N]
        p = weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-300)
        entropy = -(p * torch.log(p.clamp(min=1e-300))).sum(dim=-1)  # [L, H, N]
        senders = torch.exp(entropy).mean(dim=-1)
        return {
            f"attn_senders_l{layer}_h{head}": float(senders[layer, head])
            for layer in range(senders.shape[0])
            for head in range(senders.shape[1])
        }

    def batch_layout(self, batch: Tensor, num_graphs: int) -> dict[str, tuple[Tensor, int]] | None:
        """``{"layout": (flat_index, n_max)}``: the dense padding of ``batch``, for :meth:`forward`;
        None with neighbour lists (their sizes depend on the positions)."""
        if self.cutoff is not None and self.sparse_cutoff:
            return None
        return {"layout": _dense_index(batch, num_graphs)}

    def pair_geometry(self, pos: Tensor, batch: Tensor, num_graphs: int,
                      layout: tuple[Tensor, int] | None = None) -> PairGeometry:
        """Pairs of a batch: all pairs of each molecule (dense), or with a cutoff and
        ``sparse_cutoff`` only the pairs within it (neighbour lists). See :class:`PairGeometry`.
        ``layout``: the dense padding ``(flat_index, n_max)`` of ``batch`` (:func:`_dense_index`)."""
        flat_index, n_max = _dense_index(batch, num_graphs) if layout is None else layout
        node_mask = torch.zeros(num_graphs * n_max, dtype=torch.bool, device=pos.device)
        node_mask[flat_index] = True
        node_mask = node_mask.view(num_graphs, n_max)
        not_self = ~torch.eye(n_max, dtype=torch.bool, device=pos.device)
        pair_mask = node_mask.unsqueeze(2) & node_mask.unsqueeze(1) & not_self  # [B, N, N]
        layout = {"flat_index": flat_index, "num_graphs": num_graphs, "n_max": n_max}
        pos_dense = to_dense(pos, flat_index, num_graphs, n_max)
        if self.cutoff is not None and self.sparse_cutoff:
            neighbors, valid = self._neighbor_lists(pos_dense.detach(), pair_mask, flat_index, batch, n_max)
            vec = (pos[neighbors] - pos.unsqueeze(1)).unsqueeze(1)  # [n_atoms, 1, K, 3]
            return self._geometry(vec, valid.unsqueeze(1), **layout, neighbors=neighbors)
        vec = pos_dense.unsqueeze(1) - pos_dense.unsqueeze(2)  # [B, N, N, 3]: r_j - r_i
        return self._geometry(vec, pair_mask, **layout)

    def _geometry(self, vec: Tensor, mask: Tensor, **layout) -> PairGeometry:
        r, unit = safe_distance_and_direction(vec)
        sh = self.spherical_harmonics(unit)
        envelope = None
        if self.cutoff is not None:
            mask = mask & (r < self.cutoff)
            envelope = cosine_envelope(r, self.cutoff)
        return PairGeometry(distance=r, basis=self.rbf(r), sh=sh, mask=mask, envelope=envelope, **layout)

    def _neighbor_lists(
        self, pos_dense: Tensor, pair_mask: Tensor, flat_index: Tensor, batch: Tensor, n_max: int
    ) -> tuple[Tensor, Tensor]:
        """Senders within the cutoff of every atom: indices [n_atoms, K] and validity [n_atoms, K]
        (padding entries point to the receiver itself, a zero-length pair)."""
        with torch.no_grad():
            d2 = (pos_dense.unsqueeze(1) - pos_dense.unsqueeze(2)).square().sum(-1)
            rows = (pair_mask & (d2 < self.cutoff**2)).reshape(-1, n_max)[flat_index]  # [n_atoms, N]
            counts = rows.sum(dim=1)
            k_max = max(1, int(counts.max()) if counts.numel() else 1)
            order = torch.argsort((~rows).to(torch.int8), dim=1, stable=True)[:, :k_max]
            valid = torch.arange(k_max, device=rows.device) < counts.unsqueeze(1)
            atom_of_slot = torch.zeros(pair_mask.shape[0] * n_max, dtype=torch.long, device=rows.device)
            atom_of_slot[flat_index] = torch.arange(len(flat_index), device=rows.device)
            neighbors = atom_of_slot[batch.unsqueeze(1) * n_max + order]
            self_index = torch.arange(len(flat_index), device=rows.device).unsqueeze(1)
            neighbors = torch.where(valid, neighbors, self_index)
        return neighbors, valid

    # ------------------------------------------------------------------ data statistics
    def fit_to_data(
        self,
        train: MolecularDataset | Sequence[MolecularDataset],
        val: MolecularDataset | None = None,
    ) -> None:
        """Set the per-element energy shift (least squares E ≈ sum_i shift[z_i]), the energy scale
        (RMS of the training force components, kcal/mol/Å) and the elements seen in training.

        ``train`` may be one dataset or several (molecules of different composition make the
        per-element shifts identifiable; for one molecule the minimum-norm solution is used).
        ``val`` is not used.
        """
        datasets = [train] if isinstance(train, MolecularDataset) else list(train)
        if not datasets:
            raise DataError("fit_to_data: no training data given")
        shift = fit_element_shifts([d.z for d in datasets], [d.E for d in datasets], self.max_z)
        scale = force_rms([d.F for d in datasets])
        if not np.isfinite(scale):
            raise DataError(f"fit_to_data: training forces have a non-finite RMS ({scale})")
        if scale == 0.0:
            warnings.warn("fit_to_data: all training forces are zero; using energy scale 1 kcal/mol/Å", stacklevel=2)
            scale = 1.0
        elements = np.unique(np.concatenate([d.z for d in datasets]))
        with torch.no_grad():
            self.energy_shift.copy_(torch.as_tensor(shift, dtype=self.energy_shift.dtype))
            self.energy_scale.fill_(scale)
            self.seen_elements.zero_()
            self.seen_elements[torch.as_tensor(elements, dtype=torch.long)] = True
        logger.info(
            "GeoPaTra statistics: shifts %s kcal/mol, force scale %.4f kcal/mol/Å",
            {int(e): round(float(shift[e]), 4) for e in elements},
            scale,
        )

    def check_atoms(self, z: Tensor | np.ndarray) -> None:
        """Raise :class:`ElementError` for atomic numbers outside 1..max_z or never seen in training
        (before :meth:`fit_to_data` every element is accepted)."""
        z = torch.as_tensor(np.asarray(z), dtype=torch.long).reshape(-1)
        if z.numel() == 0:
            return
        bad = z[(z < 1) | (z > self.max_z)]
        if bad.numel() > 0:
            raise ElementError(f"atomic numbers {sorted(set(bad.tolist()))} outside 1..{self.max_z} of this model")
        unseen = sorted(set(z[~self.seen_elements.cpu()[z]].tolist()))
        if unseen:
            seen = torch.nonzero(self.seen_elements).flatten().tolist()
            raise ElementError(
                f"elements with atomic numbers {unseen} were not in the training data of this model "
                f"(trained on {seen}); retrain with them or use another model"
            )


def _zero_linear(num_features: int) -> nn.Linear:
    """A bias-free linear map from ``num_features`` scalars to one per-atom energy, starting at zero."""
    linear = nn.Linear(num_features, 1, bias=False)
    nn.init.zeros_(linear.weight)
    return linear


@contextlib.contextmanager
def _traceable_e3nn() -> Iterator[None]:
    """Build e3nn modules as plain fx graphs, not TorchScript, so that ``torch.compile`` can trace them
    (:mod:`geopatra.models.inference`); eager speed is the same either way."""
    saved = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(**saved)


def _dense_index(batch: Tensor, num_graphs: int) -> tuple[Tensor, int]:
    """Index of each atom in a flattened [num_graphs * n_max] padded layout, and n_max."""
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (atoms of each molecule contiguous, molecules in order)")
    counts = torch.bincount(batch, minlength=num_graphs)
    n_max = int(counts.max()) if counts.numel() > 0 else 0
    start = torch.cumsum(counts, 0) - counts
    position = torch.arange(batch.numel(), device=batch.device) - start[batch]
    return batch * n_max + position, n_max
