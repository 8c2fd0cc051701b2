"""The symmetrised Matérn 5/2 gradient-domain kernel of sGDML, matrix-free and GEMM-based.

Base kernel on descriptors x, x' (1/Å), length scale σ, ``r = |x - x'|``, ``a = √5/σ``:

    k(x, x') = (1 + a r + a² r²/3) exp(-a r)

symmetrised over the S atom permutations ``P_p`` of the molecule, applied to the *training* point:
``k_sym(x, x_j) = Σ_p k(x, P_p x_j)`` (as the reference sGDML). Forces are fitted with the Hessian
kernel. With ``u = x - P_p x_j``:

    -∇_u∇_uᵀ k = c1(r) I - c2(r) u uᵀ,   c1 = 5/(3σ²) (1 + a r) e^{-ar},  c2 = 25/(3σ⁴) e^{-ar}
    K[i, j]    = Σ_p J_iᵀ (c1 I - c2 u uᵀ) P_p J_j                                [3N, 3N]

and ``∇_u k = -c1 u``. The model energy and forces (kcal/mol, kcal/mol/Å) given coefficients α
[M, N, 3] and ``w_j = J_j α_j`` are

    E(R) = -Σ_{j,p} c1(r_jp) (x - P_p x_j) · P_p w_j + c,    F = -∂E/∂R = Jᵀ z,
    z    =  Σ_{j,p} c1 P_p w_j - c2 u (u · P_p w_j)

so ``F = K α`` exactly (checked in the tests).

Products ``K V`` (:meth:`SGDMLKernel.matmat`) never form ``K``: ``W = J V`` per frame, then for a
block of rows all ``(j, p)`` at once with GEMMs over descriptors (distances by the
``|x|² + |y|² - 2 x·y`` expansion, ``Σ c1 P_p w_j`` and the rank-one ``c2`` terms as GEMMs), then
``Jᵀ z`` per frame. Descriptor entries that the permutations move alike form a class
(:class:`~geopatra.models.sgdml.geometry.EntryClass`); on a class ``P_p x_j`` takes one value per
coset of the permutations, so the GEMMs run over cosets, not over all S permutations:
``O(M² k T)`` flops with ``T = Σ_c cosets_c D_c`` (D ≤ T ≤ S D), plus ``O(M² S k)`` for the
coefficients and the sums over each coset.
Dense blocks
(:meth:`SGDMLKernel.block`, used for columns and the exact solver) come from the block formula of
:mod:`geopatra.models.sgdml.blocks` (GEMMs, plus the symmetrisation compressed to the distinct
descriptor-pair transitions of the group), one row frame by a tile of column frames at a time.
:class:`SGDMLKernel` implements the ``KernelOperator`` protocol of
:mod:`geopatra.solvers.operator` on ``M`` training frames
(``n = 3NM`` unknowns, ``K`` without ``λI``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geopatra.models.sgdml.blocks import block_tile, diagonal_blocks, matern_coefficients, row_tables
from geopatra.models.sgdml.descriptor import jvp, vjp
from geopatra.models.sgdml.geometry import KernelGeometry

#: Target size of temporary tensors in the block computations [bytes].
_BLOCK_BYTES = 32 * 2**20
#: Target number of entries of one dense kernel tile (small enough to stay in cache).
_TILE_ENTRIES = 2**19


@dataclass(frozen=True, eq=False)
class DescriptorWeights:
    """Descriptor weights ``w_j = J_j v_j`` of k vectors v per training frame, laid out per entry class
    of the geometry (:class:`~geopatra.models.sgdml.geometry.EntryClass`): M frames."""

    per_class: tuple[Tensor, ...]  #: per class, [M, cosets, k, Dc]: w_j[images]
    q: Tensor  #: [M, k] x_j · w_j (= P_p x_j · P_p w_j for every p)


def _as_index(frames: Tensor) -> Tensor | slice:
    """A slice for a run of consecutive frame indices (views instead of gathers), else ``frames``."""
    start = int(frames[0])
    if bool((frames == torch.arange(start, start + frames.numel(), device=frames.device)).all()):
        return slice(start, start + frames.numel())
    return frames


class SGDMLKernel:
    """The gradient-domain sGDML kernel on training frames as a matrix-free operator: a
    :class:`KernelGeometry` (training frames and their permutations, σ-independent) and a σ.

    Args:
        geometry: the training frames' σ-independent arrays (:meth:`KernelGeometry.of`).
        sigma: Matérn length scale σ (1/Å, the descriptor unit).

    Attributes:
        n: unknowns ``3NM``. dtype: float64. device: the geometry's device.
    """

    dtype = torch.float64

    def __init__(self, geometry: KernelGeometry, sigma: float) -> None:
        self.geometry = geometry
        self.sigma = float(sigma)
        self.n = 3 * geometry.n_atoms * geometry.n_frames

    @classmethod
    def of(cls, R: Tensor, perms: Tensor, sigma: float, device: torch.device | str | None = None) -> SGDMLKernel:
        """The kernel of training positions ``R`` [M, N, 3] (Å) under atom permutations ``perms`` [S, N]
        (the identity included), on ``device`` (default: ``R.device``)."""
        return cls(KernelGeometry.of(R, perms, device), sigma)

    @property
    def device(self) -> torch.device:
        return self.geometry.device

    @property
    def n_frames(self) -> int:
        return self.geometry.n_frames

    @property
    def n_atoms(self) -> int:
        return self.geometry.n_atoms

    @property
    def n_perms(self) -> int:
        return self.geometry.n_perms

    def with_sigma(self, sigma: float) -> SGDMLKernel:
        """The same operator with another σ, sharing the geometry (no recomputation)."""
        return SGDMLKernel(self.geometry, sigma)

    def _coefficients(self, xq: Tensor) -> tuple[Tensor, Tensor]:
        """``(c1, c2)`` [Q, M, S] between query descriptors ``xq`` [Q, D] and all ``P_p x_j``."""
        return matern_coefficients(self.geometry.squared_distances(xq).sqrt(), self.sigma)

    # ----------------------------------------------------------------- descriptor-space products
    def weights(self, alpha: Tensor) -> DescriptorWeights:
        """The descriptor weights ``w_j = J_j α_j`` of coefficients ``alpha`` [n] (k = 1)."""
        return self._weights_multi(alpha.reshape(-1, 1))

    def _weights_multi(self, V: Tensor) -> DescriptorWeights:
        """The descriptor weights ``J_j v_j`` of the k columns of ``V`` [n, k]."""
        geo, k = self.geometry, V.shape[1]
        v = V.T.reshape(k, self.n_frames, self.n_atoms, 3)
        w = jvp(geo.g, v)  # [k, M, D]
        return DescriptorWeights(per_class=tuple(w[:, :, c.images].permute(1, 2, 0, 3) for c in geo.classes),
                                 q=(w * geo.x).sum(-1).T.contiguous())

    def _descriptor_forces_multi(self, xq: Tensor, weights: DescriptorWeights) -> Tensor:
        """``z`` [Q, k, D] of the module docstring for query descriptors ``xq`` [Q, D].

        The sums over p run per coset of each entry class (:class:`KernelGeometry`): the GEMMs cost
        ``Σ_c cosets_c · Dc`` per pair of frames, not ``S · D``."""
        geo, m, s = self.geometry, self.n_frames, self.n_perms
        k, d = weights.q.shape[1], xq.shape[1]
        step = max(1, _BLOCK_BYTES // (8 * (4 * m * s * k + 3 * m * s + 3 * k * d)))
        out = xq.new_empty(xq.shape[0], k, d)
        for start in range(0, xq.shape[0], step):
            xb = xq[start : start + step]
            n_q = xb.shape[0]
            c1, c2 = self._coefficients(xb)  # [Q, M, S]
            uw = geo.permuted_dots(xb, list(weights.per_class)) - weights.q[None, :, None, :]  # u · P_p w_j
            bb = c2[..., None] * uw  # [Q, M, S, k]
            z = out[start : start + step]
            for entry_class, w in zip(geo.classes, weights.per_class):  # Σ c1 P_p w_j
                cosets, dc = entry_class.n_cosets, entry_class.entries.numel()
                c1_sum = geo.coset_sums(c1, entry_class).reshape(n_q, m * cosets)
                z[:, :, entry_class.entries] = (c1_sum @ w.reshape(m * cosets, k * dc)).view(n_q, k, dc)
            z -= bb.reshape(n_q, m * s, k).sum(1)[:, :, None] * xb[:, None, :]
            for entry_class in geo.classes:  # + Σ c2 (u · P_p w_j) P_p x_j
                cosets = entry_class.n_cosets
                b_sum = geo.coset_sums(bb, entry_class).permute(0, 3, 1, 2).reshape(n_q, k, m * cosets)
                z[:, :, entry_class.entries] += b_sum @ entry_class.x.reshape(m * cosets, -1)
        return out

    def descriptor_forces(self, xq: Tensor, weights: DescriptorWeights) -> Tensor:
        """``z`` [Q, D] of the module docstring for query descriptors ``xq`` [Q, D] (k = 1 weights)."""
        return self._descriptor_forces_multi(xq, weights)[:, 0]

    def energy(self, xq: Tensor, weights: DescriptorWeights) -> Tensor:
        """Energies [Q] without the integration constant for k = 1 weights; differentiable w.r.t.
        ``xq`` [Q, D]."""
        geo = self.geometry
        out = []
        step = max(1, _BLOCK_BYTES // (8 * 4 * self.n_frames * self.n_perms))
        for start in range(0, xq.shape[0], step):
            xb = xq[start : start + step]
            # Clamp keeps d sqrt finite at r = 0, where the exact gradient term (∝ u) vanishes.
            r = geo.squared_distances(xb).clamp_min(1e-36).sqrt()  # [Q, M, S]
            c1, _ = matern_coefficients(r, self.sigma)
            xw = geo.permuted_dots(xb, list(weights.per_class))[..., 0]  # xq · P_p w_j
            out.append(-(c1 * (xw - weights.q[None, :, None, 0])).sum((1, 2)))
        return torch.cat(out) if out else xq.new_zeros(0)

    # ------------------------------------------------------------------------ KernelOperator API
    def matmat(self, V: Tensor, rows: slice = slice(None)) -> Tensor:
        """``K V`` [n, k] for ``V`` [n, k], or only the rows of the training frames ``rows`` (a slice of
        frames; [3N frames, k]), as a process of a distributed product computes them. Never forms ``K``."""
        V = V.to(self.device, self.dtype)
        k = V.shape[1]
        start, stop, _ = rows.indices(self.n_frames)
        weights = self._weights_multi(V)
        out = V.new_empty(max(0, stop - start), k, self.n_atoms, 3)
        step = max(1, _BLOCK_BYTES // (8 * k * (self.n_atoms**2 * 4 + 3 * self.geometry.x.shape[1])))
        for s in range(start, stop, step):
            e = min(stop, s + step)
            z = self._descriptor_forces_multi(self.geometry.x[s:e], weights)  # [Q, k, D]
            out[s - start : e - start] = vjp(self.geometry.g[s:e, None], z)
        return out.permute(0, 2, 3, 1).reshape(out.shape[0] * 3 * self.n_atoms, k)

    def matvec(self, v: Tensor) -> Tensor:
        """``K v`` for ``v`` [n] (or [n, k], as :meth:`matmat`)."""
        if v.ndim == 2:
            return self.matmat(v)
        return self.matmat(v.reshape(-1, 1))[:, 0]

    def block(self, row_frames: Tensor, col_frames: Tensor, out: Tensor | None = None) -> Tensor:
        """Dense ``K`` restricted to frames ``row_frames`` x ``col_frames``: [a*3N, b*3N].

        Computed tile by tile with :func:`blocks.block_tile`; written
        into ``out`` (any strided [a*3N, b*3N] view, e.g. rows of a larger matrix) if given.
        """
        row_frames = row_frames.to(self.device, torch.long)
        col_frames = col_frames.to(self.device, torch.long)
        a, b, d = row_frames.numel(), col_frames.numel(), 3 * self.n_atoms
        if out is None:
            out = torch.empty(a * d, b * d, dtype=self.dtype, device=self.device)
        out4 = out.view(a, d, b, d)
        cols_per_tile = max(1, _TILE_ENTRIES // (d * d))
        for r in range(a):
            rows = row_tables(self.geometry, int(row_frames[r]))
            for c in range(0, b, cols_per_tile):
                cols = _as_index(col_frames[c : c + cols_per_tile])
                block_tile(self.geometry, self.sigma, int(row_frames[r]), cols, out4[r, :, c : c + cols_per_tile], rows)
        return out

    def fill_dense(self, K: Tensor, *, lower_only: bool = False, progress: bool = False) -> None:
        """Write ``K`` [n, n] into ``K`` (only the frame blocks on and below the diagonal if
        ``lower_only``: every entry of the row-major lower triangle is then correct)."""
        frames = torch.arange(self.n_frames, device=self.device)
        d = 3 * self.n_atoms
        for i in tqdm(range(self.n_frames), desc="kernel assembly", disable=not progress, leave=False):
            stop = i + 1 if lower_only else self.n_frames
            self.block(frames[i : i + 1], frames[:stop], out=K[i * d : (i + 1) * d, : stop * d])

    def columns(self, idx: Tensor, rows: slice = slice(None)) -> Tensor:
        """``K[:, idx]`` [n, k] (or only the rows of the training frames ``rows``, a slice of frames),
        from the dense rows ``K[frames, :]`` of the frames ``idx`` touches (``K`` is symmetric).
        Returned as the transpose of a row-major [k, n] tensor (no copy)."""
        idx = idx.to(self.device, torch.long)
        d = 3 * self.n_atoms
        start, stop, _ = rows.indices(self.n_frames)
        frames, inverse = torch.unique(idx // d, return_inverse=True)
        block = self.block(frames, torch.arange(start, stop, device=self.device))  # [f*d, (stop - start)*d]
        sel = inverse * d + idx % d
        if sel.numel() == block.shape[0] and bool((sel == torch.arange(sel.numel(), device=sel.device)).all()):
            return block.T
        return block[sel].T

    def diagonal(self) -> Tensor:
        """``diag(K)`` [n] from the M diagonal blocks (direct formula, ``O(M S N²)``)."""
        return diagonal_blocks(self.geometry, self.sigma).reshape(-1)

    def __repr__(self) -> str:
        return (
            f"SGDMLKernel(M={self.n_frames}, N={self.n_atoms}, perms={self.n_perms}, "
            f"sigma={self.sigma:g}, n={self.n}, device={self.device})"
        )
