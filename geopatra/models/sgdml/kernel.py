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
``c2`` terms as two more GEMMs), ``O(S M² D k)`` flops, then ``Jᵀ z`` per frame. Dense blocks
(:meth:`SGDMLKernel.block`, used for columns and the exact solver) come from the block formula of
:mod:`geopatra.models.sgdml.blocks` (GEMMs, plus the symmetrisation compressed to the distinct
descriptor-pair transitions of the group), one row frame by a tile of column frames at a time.
:class:`SGDMLKernel` implements the ``KernelOperator`` protocol of
:mod:`geopatra.solvers.operator` on ``M`` training frames
(``n = 3NM`` unknowns, ``K`` without ``λI``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geopatra.models.sgdml.blocks import block_tile, diagonal_blocks, matern_coefficients, row_tables
from geopatra.models.sgdml.descriptor import (
    descriptor,
    descriptor_permutation,
    jvp,
    pair_gradients,
    vjp,
)

#: Target size of temporary tensors in the block computations [bytes].
_BLOCK_BYTES = 256 * 2**20
#: Target number of entries of one dense kernel tile (small enough to stay in cache).
_TILE_ENTRIES = 2**19


def _sq_dist(x: Tensor, y: Tensor, y_sq: Tensor) -> Tensor:
    """``|x_q - y_k|²`` [Q, K] by the expansion, clamped at 0. ``x`` [Q, D], ``y`` [K, D]."""
    return ((x * x).sum(-1, keepdim=True) + y_sq[None, :] - 2.0 * (x @ y.T)).clamp_min(0.0)


def _as_index(frames: Tensor) -> Tensor | slice:
    """A slice for a run of consecutive frame indices (views instead of gathers), else ``frames``."""
    start = int(frames[0])
    if bool((frames == torch.arange(start, start + frames.numel(), device=frames.device)).all()):
        return slice(start, start + frames.numel())
    return frames


class SGDMLKernel:
    """The gradient-domain sGDML kernel on training frames ``R`` as a matrix-free operator.

    Args:
        R: training positions [M, N, 3], Å.
        perms: atom permutations [S, N] (the identity included).
        sigma: Matérn length scale σ (1/Å, the descriptor unit).
        device: where to compute (default: ``R.device``).

    Attributes:
        n: unknowns ``3NM``. dtype: float64. device: the compute device.
    """

    def __init__(
        self, R: Tensor, perms: Tensor, sigma: float, device: torch.device | str | None = None
    ) -> None:
        self.device = torch.device(device) if device is not None else R.device
        self.dtype = torch.float64
        self.R = R.to(self.device, self.dtype)
        self.perms = perms.to(self.device, torch.long)
        self.sigma = float(sigma)
        self.n_frames, self.n_atoms = int(R.shape[0]), int(R.shape[1])
        self.n = 3 * self.n_atoms * self.n_frames
        self.x = descriptor(self.R)  # [M, D]
        self.g = pair_gradients(self.R)  # [M, N, N, 3]
        self.dperms = torch.stack([descriptor_permutation(p) for p in self.perms])  # [S, D]
        self.inv_perms = torch.argsort(self.perms, dim=1)  # [S, N]
        self.inv_dperms = torch.argsort(self.dperms, dim=1)  # [S, D]: P_pᵀ y = y[inv_dperms[p]]
        self.x_perm = self.x[:, self.dperms].reshape(-1, self.x.shape[1])  # [M*S, D]: P_p x_j
        self.x_perm_sq = (self.x_perm * self.x_perm).sum(-1)

    @property
    def n_perms(self) -> int:
        return int(self.perms.shape[0])

    def with_sigma(self, sigma: float) -> SGDMLKernel:
        """The same operator with another σ, sharing every σ-independent array (no recomputation)."""
        other = object.__new__(SGDMLKernel)
        other.__dict__.update(self.__dict__)
        other.sigma = float(sigma)
        return other

    def _coefficients(self, xq: Tensor) -> tuple[Tensor, Tensor]:
        """``(c1, c2)`` [Q, M*S] between query descriptors ``xq`` [Q, D] and all ``P_p x_j``."""
        return matern_coefficients(_sq_dist(xq, self.x_perm, self.x_perm_sq).sqrt(), self.sigma)

    # ----------------------------------------------------------------- descriptor-space products
    def weights(self, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Permuted descriptor weights ``P_p w_j`` [M*S, D] and ``x_j · w_j`` [M*S] of ``alpha`` [n]."""
        w_perm, q = self._weights_multi(alpha.reshape(-1, 1))
        return w_perm[:, 0], q[:, 0]

    def _weights_multi(self, V: Tensor) -> tuple[Tensor, Tensor]:
        """``P_p J_j v_j`` [M*S, k, D] and ``x_j · J_j v_j`` [M*S, k] for ``V`` [n, k]."""
        k = V.shape[1]
        v = V.T.reshape(k, self.n_frames, self.n_atoms, 3)
        w = jvp(self.g, v)  # [k, M, D]
        q = (w * self.x).sum(-1).T.repeat_interleave(self.n_perms, dim=0)  # [M*S, k]
        w_perm = w[:, :, self.dperms].permute(1, 2, 0, 3)  # [M, S, k, D]
        return w_perm.reshape(-1, k, w.shape[-1]), q

    def _descriptor_forces_multi(self, xq: Tensor, w_perm: Tensor, q: Tensor) -> Tensor:
        """``z`` [Q, k, D] of the module docstring for ``xq`` [Q, D], ``w_perm`` [M*S, k, D]."""
        ms, k, d = w_perm.shape
        step = max(1, _BLOCK_BYTES // (8 * (3 * ms * k + 2 * ms + 3 * k * d)))
        out = []
        for s in range(0, xq.shape[0], step):
            xb = xq[s : s + step]  # [Q, D]
            c1, c2 = self._coefficients(xb)  # [Q, MS]
            z = (c1 @ w_perm.reshape(ms, k * d)).reshape(-1, k, d)  # Σ c1 P_p w_j
            uw = (xb @ w_perm.reshape(ms * k, d).T).reshape(-1, ms, k) - q[None]  # u · P_p w_j
            bb = (c2[:, :, None] * uw).transpose(1, 2)  # [Q, k, MS]
            z -= bb.sum(-1, keepdim=True) * xb[:, None, :]
            z += bb @ self.x_perm  # [Q, k, D]
            out.append(z)
        return torch.cat(out) if out else xq.new_zeros(0, k, d)

    def descriptor_forces(self, xq: Tensor, w_perm: Tensor, q: Tensor) -> Tensor:
        """``z`` [Q, D] of the module docstring for query descriptors ``xq`` [Q, D]."""
        return self._descriptor_forces_multi(xq, w_perm[:, None], q[:, None])[:, 0]

    def energy(self, xq: Tensor, w_perm: Tensor, q: Tensor) -> Tensor:
        """Energies [Q] without the integration constant; differentiable w.r.t. ``xq`` [Q, D]."""
        out = []
        step = max(1, _BLOCK_BYTES // (8 * 4 * w_perm.shape[0]))
        for s in range(0, xq.shape[0], step):
            xb = xq[s : s + step]
            # Clamp keeps d sqrt finite at r = 0, where the exact gradient term (∝ u) vanishes.
            r = _sq_dist(xb, self.x_perm, self.x_perm_sq).clamp_min(1e-36).sqrt()
            c1, _ = matern_coefficients(r, self.sigma)
            out.append(-(c1 * (xb @ w_perm.T - q[None, :])).sum(1))
        return torch.cat(out) if out else xq.new_zeros(0)

    # ------------------------------------------------------------------------ KernelOperator API
    def matmat(self, V: Tensor) -> Tensor:
        """``K V`` [n, k] for ``V`` [n, k]; never forms ``K`` (``O(S M² D k)`` flops in GEMMs)."""
        V = V.to(self.device, self.dtype)
        k = V.shape[1]
        w_perm, q = self._weights_multi(V)
        out = V.new_empty(self.n_frames, k, self.n_atoms, 3)
        step = max(1, _BLOCK_BYTES // (8 * k * (self.n_atoms**2 * 4 + 3 * self.x.shape[1])))
        for s in range(0, self.n_frames, step):
            z = self._descriptor_forces_multi(self.x[s : s + step], w_perm, q)  # [Q, k, D]
            out[s : s + step] = vjp(self.g[s : s + step, None], z)
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
            rows = row_tables(self, int(row_frames[r]))
            for c in range(0, b, cols_per_tile):
                cols = _as_index(col_frames[c : c + cols_per_tile])
                block_tile(self, int(row_frames[r]), cols, out4[r, :, c : c + cols_per_tile], rows)
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
        return diagonal_blocks(self).reshape(-1)

    def __repr__(self) -> str:
        return (
            f"SGDMLKernel(M={self.n_frames}, N={self.n_atoms}, perms={self.n_perms}, "
            f"sigma={self.sigma:g}, n={self.n}, device={self.device})"
        )
