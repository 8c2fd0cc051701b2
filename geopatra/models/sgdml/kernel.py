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
``|x|² + |y|² - 2 x·y`` expansion, ``Σ c1 P_p w_j`` as ``[Q, MS] @ [MS, D]``, the rank-one
``c2`` terms as two more GEMMs), then ``Jᵀ z`` per frame. The descriptor entries no permutation moves
(pairs of atoms the whole group fixes) are the same in every ``P_p x_j``, so there the sum over p
acts on scalars first and the GEMMs run over M frames, not M*S: ``O(M² k (D_fixed + S D_moving))``
flops instead of ``O(S M² D k)``. Dense blocks
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
_BLOCK_BYTES = 256 * 2**20
#: Target number of entries of one dense kernel tile (small enough to stay in cache).
_TILE_ENTRIES = 2**19


@dataclass(frozen=True, eq=False)
class DescriptorWeights:
    """Descriptor weights ``w_j = J_j v_j`` of k vectors v, split as the geometry splits the
    descriptor entries (:class:`KernelGeometry`): M training frames, S permutations."""

    fixed: Tensor  #: [M, k, Df] w_j on the entries no permutation moves (= P_p w_j there)
    moving: Tensor  #: [M*S, k, Dm] P_p w_j on the moving entries
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
        """``(c1, c2)`` [Q, M*S] between query descriptors ``xq`` [Q, D] and all ``P_p x_j``."""
        r = self.geometry.squared_distances(xq).reshape(xq.shape[0], -1).sqrt()
        return matern_coefficients(r, self.sigma)

    # ----------------------------------------------------------------- descriptor-space products
    def weights(self, alpha: Tensor) -> DescriptorWeights:
        """The descriptor weights ``w_j = J_j α_j`` of coefficients ``alpha`` [n] (k = 1)."""
        return self._weights_multi(alpha.reshape(-1, 1))

    def _weights_multi(self, V: Tensor) -> DescriptorWeights:
        """The descriptor weights ``J_j v_j`` of the k columns of ``V`` [n, k]."""
        geo, k = self.geometry, V.shape[1]
        v = V.T.reshape(k, self.n_frames, self.n_atoms, 3)
        w = jvp(geo.g, v)  # [k, M, D]
        moving = w[:, :, geo.dperms[:, geo.moving]].permute(1, 2, 0, 3)  # [M, S, k, Dm]
        return DescriptorWeights(fixed=w[:, :, geo.fixed].permute(1, 0, 2).contiguous(),
                                 moving=moving.reshape(self.n_frames * self.n_perms, k, geo.moving.numel()),
                                 q=(w * geo.x).sum(-1).T.contiguous())

    def _descriptor_forces_multi(self, xq: Tensor, weights: DescriptorWeights) -> Tensor:
        """``z`` [Q, k, D] of the module docstring for query descriptors ``xq`` [Q, D].

        On the fixed entries ``Σ_p`` acts on scalars only (``P_p w_j = w_j`` there), so their GEMMs
        run over the M frames; only the moving entries pay for the M*S permuted copies."""
        geo = self.geometry
        m, s, (ms, k, dm) = self.n_frames, self.n_perms, weights.moving.shape
        df, d = weights.fixed.shape[2], xq.shape[1]
        step = max(1, _BLOCK_BYTES // (8 * (3 * ms * k + 2 * ms + 3 * k * d)))
        out = xq.new_empty(xq.shape[0], k, d)
        for start in range(0, xq.shape[0], step):
            xb = xq[start : start + step]
            q_count = xb.shape[0]
            xf, xm = xb[:, geo.fixed], xb[:, geo.moving]
            c1, c2 = self._coefficients(xb)  # [Q, MS]
            uw = ((xf @ weights.fixed.reshape(m * k, df).T).view(q_count, m, 1, k)
                  + (xm @ weights.moving.reshape(ms * k, dm).T).view(q_count, m, s, k)
                  - weights.q[None, :, None, :])  # u · P_p w_j  [Q, M, S, k]
            bb = c2.view(q_count, m, s, 1) * uw
            b_frame = bb.sum(2)  # [Q, M, k]
            b_total = b_frame.sum(1)[:, :, None]  # [Q, k, 1]
            z_fixed = (c1.view(q_count, m, s).sum(2) @ weights.fixed.reshape(m, k * df)).view(q_count, k, df)
            z_fixed -= b_total * xf[:, None, :]
            z_fixed += b_frame.transpose(1, 2) @ geo.x_fixed
            z_moving = (c1 @ weights.moving.reshape(ms, k * dm)).view(q_count, k, dm)
            z_moving -= b_total * xm[:, None, :]
            z_moving += bb.reshape(q_count, ms, k).transpose(1, 2) @ geo.x_moving
            out[start : start + step, :, geo.fixed] = z_fixed
            out[start : start + step, :, geo.moving] = z_moving
        return out

    def descriptor_forces(self, xq: Tensor, weights: DescriptorWeights) -> Tensor:
        """``z`` [Q, D] of the module docstring for query descriptors ``xq`` [Q, D] (k = 1 weights)."""
        return self._descriptor_forces_multi(xq, weights)[:, 0]

    def energy(self, xq: Tensor, weights: DescriptorWeights) -> Tensor:
        """Energies [Q] without the integration constant for k = 1 weights; differentiable w.r.t.
        ``xq`` [Q, D]."""
        geo, m, s = self.geometry, self.n_frames, self.n_perms
        out = []
        step = max(1, _BLOCK_BYTES // (8 * 4 * m * s))
        for start in range(0, xq.shape[0], step):
            xb = xq[start : start + step]
            # Clamp keeps d sqrt finite at r = 0, where the exact gradient term (∝ u) vanishes.
            r = geo.squared_distances(xb).clamp_min(1e-36).sqrt()  # [Q, M, S]
            c1, _ = matern_coefficients(r, self.sigma)
            xw = ((xb[:, geo.fixed] @ weights.fixed[:, 0].T)[:, :, None]
                  + (xb[:, geo.moving] @ weights.moving[:, 0].T).view(xb.shape[0], m, s))  # xq · P_p w_j
            out.append(-(c1 * (xw - weights.q[None, :, 0, None])).sum((1, 2)))
        return torch.cat(out) if out else xq.new_zeros(0)

    # ------------------------------------------------------------------------ KernelOperator API
    def matmat(self, V: Tensor) -> Tensor:
        """``K V`` [n, k] for ``V`` [n, k]; never forms ``K`` (``O(S M² D k)`` flops in GEMMs)."""
        V = V.to(self.device, self.dtype)
        k = V.shape[1]
        weights = self._weights_multi(V)
        out = V.new_empty(self.n_frames, k, self.n_atoms, 3)
        step = max(1, _BLOCK_BYTES // (8 * k * (self.n_atoms**2 * 4 + 3 * self.geometry.x.shape[1])))
        for s in range(0, self.n_frames, step):
            z = self._descriptor_forces_multi(self.geometry.x[s : s + step], weights)  # [Q, k, D]
            out[s : s + step] = vjp(self.geometry.g[s : s + step, None], z)
        return out.permute(0, 2, 3, 1).reshape(self.n, k)

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

    def columns(self, idx: Tensor) -> Tensor:
        """``K[:, idx]`` [n, k], from the dense rows ``K[frames, :]`` of the frames ``idx`` touches
        (``K`` is symmetric). Returned as the transpose of a row-major [k, n] tensor (no copy)."""
        idx = idx.to(self.device, torch.long)
        d = 3 * self.n_atoms
        frames, inverse = torch.unique(idx // d, return_inverse=True)
        rows = self.block(frames, torch.arange(self.n_frames, device=self.device))  # [f*d, n]
        sel = inverse * d + idx % d
        if sel.numel() == rows.shape[0] and bool((sel == torch.arange(sel.numel(), device=sel.device)).all()):
            return rows.T
        return rows[sel].T

    def diagonal(self) -> Tensor:
        """``diag(K)`` [n] from the M diagonal blocks (direct formula, ``O(M S N²)``)."""
        return diagonal_blocks(self.geometry, self.sigma).reshape(-1)

    def __repr__(self) -> str:
        return (
            f"SGDMLKernel(M={self.n_frames}, N={self.n_atoms}, perms={self.n_perms}, "
            f"sigma={self.sigma:g}, n={self.n}, device={self.device})"
        )
