"""The symmetrised Matérn 5/2 gradient-domain kernel of sGDML, matrix-free.

Base kernel on descriptors x, x' (1/Å), length scale σ, ``r = |x - x'|``, ``a = √5/σ``:

    k(x, x') = (1 + a r + a² r²/3) exp(-a r)

symmetrised over the S atom permutations ``P_p`` of the molecule, applied to the *training* point:
``k_sym(x, x_j) = Σ_p k(x, P_p x_j)`` (as the reference sGDML). Forces are fitted with the Hessian
kernel. With ``u = x - P_p x_j``:

    -∇_u∇_uᵀ k = c1(r) I - c2(r) u uᵀ,   c1 = 5/(3σ²) (1 + a r) e^{-ar},  c2 = 25/(3σ⁴) e^{-ar}
    K[i, j]    = Σ_p J_iᵀ (c1 I - c2 u uᵀ) ∂(P_p x_j)/∂R_j                 [3N, 3N]

and ``∇_u k = -c1 u``. The model energy and forces (kcal/mol, kcal/mol/Å) given coefficients α
[M, N, 3] and ``w_j = J_j α_j`` are

    E(R) = -Σ_{j,p} c1(r_jp) (x - P_p x_j) · P_p w_j + c,    F = -∂E/∂R = Jᵀ z,
    z    =  Σ_{j,p} c1 P_p w_j - c2 u (u · P_p w_j)

so ``F = K α`` exactly (checked in the tests). :class:`SGDMLKernel` implements the
``KernelOperator`` protocol of :mod:`geopatra.solvers.operator` on ``M`` training frames
(``n = 3NM`` unknowns); its products are matrix products over blocks of training frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from geopatra.models.sgdml.descriptor import (
    descriptor,
    descriptor_permutation,
    jvp,
    pair_gradients,
    to_square,
    vjp,
)

#: Target size of temporary tensors in the block computations [bytes].
_BLOCK_BYTES = 256 * 2**20


def matern_coefficients(r: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """``(c1, c2)`` of the module docstring at distances ``r`` (1/Å) for length scale ``sigma``."""
    a = math.sqrt(5.0) / sigma
    e = torch.exp(-a * r)
    c1 = (5.0 / (3.0 * sigma**2)) * (1.0 + a * r) * e
    c2 = (25.0 / (3.0 * sigma**4)) * e
    return c1, c2


def _sq_dist(x: Tensor, y: Tensor, y_sq: Tensor) -> Tensor:
    """``|x_q - y_k|²`` [Q, K] by the expansion, clamped at 0. ``x`` [Q, D], ``y`` [K, D]."""
    return ((x * x).sum(-1, keepdim=True) + y_sq[None, :] - 2.0 * (x @ y.T)).clamp_min(0.0)


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
        self.x_perm = self.x[:, self.dperms].reshape(-1, self.x.shape[1])  # [M*S, D]
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

    def _row_chunk(self, width: int) -> int:
        return max(1, min(self.n_frames, _BLOCK_BYTES // (8 * max(width, 1) * 4)))

    # ----------------------------------------------------------------- descriptor-space products
    def weights(self, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Permuted descriptor weights ``P_p w_j`` [M*S, D] and ``x_j · w_j`` [M*S] of ``alpha`` [n]."""
        w = jvp(self.g, alpha.reshape(self.n_frames, self.n_atoms, 3))  # [M, D]
        q = (self.x * w).sum(-1).repeat_interleave(self.n_perms)
        return w[:, self.dperms].reshape(-1, w.shape[1]), q

    def descriptor_forces(self, xq: Tensor, w_perm: Tensor, q: Tensor) -> Tensor:
        """``z`` [Q, D] of the module docstring for query descriptors ``xq`` [Q, D]."""
        out = []
        for s in range(0, xq.shape[0], self._row_chunk(w_perm.shape[0])):
            xb = xq[s : s + self._row_chunk(w_perm.shape[0])]
            r = _sq_dist(xb, self.x_perm, self.x_perm_sq).sqrt()
            c1, c2 = matern_coefficients(r, self.sigma)
            uw = xb @ w_perm.T - q[None, :]
            bb = c2 * uw
            out.append(c1 @ w_perm - bb.sum(1, keepdim=True) * xb + bb @ self.x_perm)
        return torch.cat(out) if out else xq.new_zeros(0, xq.shape[1])

    def energy(self, xq: Tensor, w_perm: Tensor, q: Tensor) -> Tensor:
        """Energies [Q] without the integration constant; differentiable w.r.t. ``xq`` [Q, D]."""
        out = []
        step = self._row_chunk(w_perm.shape[0])
        for s in range(0, xq.shape[0], step):
            xb = xq[s : s + step]
            # Clamp keeps d sqrt finite at r = 0, where the exact gradient term (∝ u) vanishes.
            r = _sq_dist(xb, self.x_perm, self.x_perm_sq).clamp_min(1e-36).sqrt()
            c1, _ = matern_coefficients(r, self.sigma)
            out.append(-(c1 * (xb @ w_perm.T - q[None, :])).sum(1))
        return torch.cat(out) if out else xq.new_zeros(0)

    # ------------------------------------------------------------------------ KernelOperator API
    def matvec(self, v: Tensor) -> Tensor:
        """``K v`` for ``v`` [n] (or [n, m], column by column); never forms ``K``."""
        if v.ndim == 2:
            return torch.stack([self.matvec(col) for col in v.T], dim=1)
        w_perm, q = self.weights(v.to(self.device, self.dtype))
        z = self.descriptor_forces(self.x, w_perm, q)  # [M, D]
        return vjp(self.g, z).reshape(-1)

    def pair_blocks(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Kernel blocks ``K[rows[k], cols[k]]`` [P, 3N, 3N] for frame index pairs [P].

        In atom blocks (a of R_i, b of R_j, π = perm p): ``J_iᵀ P_p J_j`` has the entries
        ``-g_i[a, π⁻¹b] g_j[πa, b]ᵀ`` plus, at ``b = πa``, ``Σ_e g_i[a, e] g_j[πa, πe]ᵀ``; the c2 term
        is ``Σ_p c2 (J_iᵀ u)(J_jᵀ P_pᵀ u)ᵀ``. Sums over p are contractions, never S blocks.
        """
        n = self.n_atoms
        P, inv = self.perms, self.inv_perms  # [S, N]
        gi, gj = self.g[rows], self.g[cols]  # [P, N, N, 3]
        u = self.x[rows][:, None, :] - self.x[cols][:, self.dperms]  # [P, S, D]
        r = torch.linalg.vector_norm(u, dim=-1)
        c1, c2 = matern_coefficients(r, self.sigma)  # [P, S]
        gi_inv = gi[:, :, inv].permute(0, 2, 1, 3, 4)  # [P, S, N(a), N(b), 3]: g_i[a, π⁻¹b]
        gj_row = gj[:, P]  # [P, S, N(a), N(b), 3]: g_j[πa, b]
        out = (-torch.einsum("psabk,ps,psabl->pabkl", gi_inv, c1, gj_row)).contiguous()  # [P,N,N,3,3]
        gj_perm = gj_row.gather(
            3, P[None, :, None, :, None].expand(gj_row.shape[0], -1, n, -1, 3)
        )  # g_j[πa, πe]
        diag = torch.einsum("paek,psael->psakl", gi, gj_perm) * c1[..., None, None, None]
        a_idx = torch.arange(n, device=self.device).repeat(self.n_perms)
        b_idx = P.reshape(-1)
        flat = out.view(out.shape[0], n * n, 3, 3)
        flat.index_add_(1, a_idx * n + b_idx, diag.reshape(diag.shape[0], -1, 3, 3))
        u_sq = to_square(u, n)  # [P, S, N, N]
        left = torch.einsum("pabk,psab->psak", gi, u_sq)  # J_iᵀ u
        right = torch.einsum("psabk,psab->psak", gj_perm, u_sq)  # J(R_j[π])ᵀ u, atoms of R_j[π]
        right = right.gather(2, inv[None, :, :, None].expand(right.shape[0], -1, -1, 3))  # atoms of R_j
        out -= torch.einsum("psak,ps,psbl->pabkl", left, c2, right)
        return out.permute(0, 1, 3, 2, 4).reshape(-1, 3 * n, 3 * n)

    def _pair_chunk(self) -> int:
        per_pair = self.n_perms * 3 * self.n_atoms**2 * 8 * 4
        return max(1, _BLOCK_BYTES // per_pair)

    def block(self, row_frames: Tensor, col_frames: Tensor) -> Tensor:
        """Dense ``K`` restricted to frames ``row_frames`` x ``col_frames``: [a*3N, b*3N]."""
        a, b = row_frames.numel(), col_frames.numel()
        rr = row_frames.repeat_interleave(b)
        cc = col_frames.repeat(a)
        step = self._pair_chunk()
        blocks = torch.cat(
            [self.pair_blocks(rr[s : s + step], cc[s : s + step]) for s in range(0, a * b, step)]
        )
        d = 3 * self.n_atoms
        return blocks.reshape(a, b, d, d).permute(0, 2, 1, 3).reshape(a * d, b * d)

    def columns(self, idx: Tensor) -> Tensor:
        """``K[:, idx]`` [n, k] from the dense blocks of the training frames ``idx`` touches."""
        idx = idx.to(self.device, torch.long)
        d = 3 * self.n_atoms
        frames, inverse = torch.unique(idx // d, return_inverse=True)
        all_frames = torch.arange(self.n_frames, device=self.device)
        cols = self.block(all_frames, frames)  # [n, len(frames)*d]
        return cols[:, inverse * d + idx % d]

    def diagonal(self) -> Tensor:
        """``diag(K)`` [n] from the M diagonal blocks."""
        frames = torch.arange(self.n_frames, device=self.device)
        step = self._pair_chunk()
        parts = [
            self.pair_blocks(frames[s : s + step], frames[s : s + step]).diagonal(dim1=1, dim2=2)
            for s in range(0, self.n_frames, step)
        ]
        return torch.cat(parts).reshape(-1)

    def __repr__(self) -> str:
        return (
            f"SGDMLKernel(M={self.n_frames}, N={self.n_atoms}, perms={self.n_perms}, "
            f"sigma={self.sigma:g}, n={self.n}, device={self.device})"
        )
