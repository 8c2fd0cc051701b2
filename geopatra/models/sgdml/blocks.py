"""Dense blocks of the sGDML Hessian kernel (for columns and the exact solver).

With ``c1, c2`` at ``u = x_i - P_p x_j`` (:mod:`geopatra.models.sgdml.kernel`),

    K[i, j] = J_iᵀ C_ij J_j  -  Σ_p c2_p (J_iᵀ u_p)(J_jᵀ P_pᵀ u_p)ᵀ,     C_ij = Σ_p c1_p P_p.

The rank-S part is one GEMM per frame pair ([3N, S] @ [S, 3N]), with ``J_iᵀ P_p x_j`` and
``J_jᵀ P_pᵀ x_i`` from batched GEMMs over atoms. ``C_ij`` is sparse: each descriptor pair
d = (a, b) is sent only to pairs of the orbits of a and b, so whatever the group size S it has
T ≲ Σ_d |orbit(a)| |orbit(b)| nonzeros (T = 2,421 for Ac-Ala3-NHMe with S = 243, against S·D =
209,223 for the permutations one by one), obtained for a whole tile by one GEMM ``c1 @ ind``.
``J_iᵀ C J_j`` then costs 4T 3x3 outer products per pair (the atoms of d times those of d', with
``J[d, (c, ·)] = g[c, d∖c]``), accumulated by ``index_add_``. A tile of one row frame and b column
frames costs ``O(b (S N² + T))`` operations, most of them in GEMMs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from geopatra.models.sgdml.descriptor import vjp
from geopatra.models.sgdml.geometry import KernelGeometry

#: Target entries of the largest temporary in :func:`diagonal_blocks`.
_DIAG_ENTRIES = 2**23


def matern_coefficients(r: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """``(c1, c2)`` of the Matérn 5/2 Hessian (see :mod:`geopatra.models.sgdml.kernel`) at
    descriptor distances ``r`` (1/Å) for length scale ``sigma``."""
    a = math.sqrt(5.0) / sigma
    e = torch.exp(-a * r)
    c1 = (5.0 / (3.0 * sigma**2)) * (1.0 + a * r) * e
    c2 = (25.0 / (3.0 * sigma**4)) * e
    return c1, c2


def row_tables(geometry: KernelGeometry, i: int) -> dict[str, Tensor]:
    """Per-row-frame tables of :func:`block_tile` (``O(S N²)``, shared by all its tiles)::

        gi_perm [N, 3S, N]  g_i[π⁻¹a, π⁻¹b, k] as [a, (p, k), b]  (pair gradients of R_i∘π⁻¹)
        xi_perm [N, S, N]   (P_pᵀ x_i)[a, b] = x_i[π⁻¹a, π⁻¹b]  as [a, p, b]
    """
    inv = geometry.inv_perms  # [S, N]
    gi = geometry.g[i][inv.T[:, :, None], inv[None]]  # [a, p, b, k]
    t = geometry.block_tables
    xi = t.x_t[:, i][inv.T[:, :, None], inv[None]]  # [a, p, b]
    n = geometry.n_atoms
    return {"gi_perm": gi.permute(0, 1, 3, 2).reshape(n, 3 * geometry.n_perms, n), "xi_perm": xi,
            "left_q": geometry.g[i][t.q_c, t.q_e]}


def block_tile(
    geometry: KernelGeometry, sigma: float, i: int, cols: Tensor | slice, out: Tensor,
    rows: dict[str, Tensor] | None = None,
) -> None:
    """Write ``K[i, cols]`` into ``out`` [3N, b, 3N] (any strided view).

    Args:
        geometry: the training frames and permutations.
        sigma: the Matérn length scale σ (1/Å).
        i: the row frame.
        cols: column frame indices [b] (an index tensor, or a slice, which avoids copies).
        out: destination, indexed ``[(atom, xyz), j, (atom, xyz)]``.
        rows: :func:`row_tables` of frame i (computed if not given).
    """
    t = geometry.block_tables
    rows = rows if rows is not None else row_tables(geometry, i)
    n, s_count = geometry.n_atoms, geometry.n_perms
    g_t = t.g_t[:, :, cols]  # [a, b', j, l]
    b = g_t.shape[2]
    sq = geometry.squared_distances(geometry.x[i : i + 1], cols)[0]  # [b, S]: |x_i - P_p x_j|²
    c1, c2 = matern_coefficients(sq.sqrt(), sigma)  # [b, S]

    # Rank-S term -Σ_p c2 (J_iᵀ u)(J_jᵀ P_pᵀ u)ᵀ with u = x_i - P_p x_j (P_pᵀ P_p = I), where
    # (J_iᵀ P_p x_j)[a] = (J(R_i∘π⁻¹)ᵀ x_j)[πa] and (P_pᵀ x_i)[a, b] = x_i[π⁻¹a, π⁻¹b].
    v = torch.bmm(rows["gi_perm"], t.x_t[:, cols].transpose(1, 2))  # [a', (p, k), j]
    v = v.view(n, s_count, 3, b).transpose(0, 1)  # [p, a', k, j]
    v = v.gather(1, geometry.perms[:, :, None, None].expand(-1, -1, 3, b))  # [p, a, k, j]
    left = (t.jtx[i][None, :, :, None] - v) * (-c2).T[:, None, None, :]  # [p, a, k, j]
    right = torch.bmm(rows["xi_perm"], g_t.reshape(n, n, b * 3)).view(n, s_count, b, 3)  # [c', p, j, l]
    right = right - t.jtx[cols].permute(1, 0, 2)[:, None]
    rank = torch.bmm(left.permute(3, 1, 2, 0).reshape(b, 3 * n, s_count),
                     right.permute(2, 1, 0, 3).reshape(b, s_count, 3 * n))  # [j, (c, k), (c', l)]
    out.copy_(rank.transpose(0, 1))

    # c1 part J_iᵀ (Σ_p c1_p P_p) J_j over the distinct transitions (see BlockTables).
    weights = c1 @ t.ind  # [b, T]
    right_q = g_t[t.q_c2, t.q_e2] * weights.T[t.q_t, :, None]  # [4T, j, l]
    value = rows["left_q"][:, :, None, None] * right_q[:, None]  # [4T, k, j, l]
    acc = out.new_zeros(n * n, 3, b, 3).index_add_(0, t.q_slot, value)
    out.view(n, 3, b, n, 3).add_(acc.view(n, n, 3, b, 3).permute(0, 2, 3, 1, 4))


def diagonal_blocks(geometry: KernelGeometry, sigma: float) -> Tensor:
    """``diag(K)`` as [M, N, 3], ``O(M S N²)``. In atom blocks ``(c, c')`` the c1 part of
    ``J_iᵀ P_p J_j`` is ``-g_i[c, π⁻¹c'] g_j[πc, c']ᵀ`` plus, at ``c' = πc``,
    ``Σ_e g_i[c, e] g_j[πc, πe]ᵀ``; its diagonal (i = j, c = c') is taken term by term."""
    n, s_count = geometry.n_atoms, geometry.n_perms
    atoms = torch.arange(n, device=geometry.device)
    fixed = (geometry.perms == atoms[None]).T.to(geometry.x.dtype)  # [N, S]: π c = c
    out = []
    step = max(1, _DIAG_ENTRIES // (s_count * n * n * 3))
    for s in range(0, geometry.n_frames, step):
        frames = torch.arange(s, min(geometry.n_frames, s + step), device=geometry.device)
        g = geometry.g[frames]  # [m, N, N, 3]
        u = geometry.x[frames][:, None, :] - geometry.permuted(frames)  # [m, S, D]
        c1, c2 = matern_coefficients(torch.linalg.vector_norm(u, dim=-1), sigma)  # [m, S]
        a_part = g[:, atoms[None, :], geometry.inv_perms]  # [m, S, N, 3]: g[c, π⁻¹c]
        b_part = g[:, geometry.perms, atoms[None, :]]  # [m, S, N, 3]: g[πc, c]
        d = -(c1[..., None, None] * a_part * b_part).sum(1)  # [m, N, 3]
        t = (g[:, :, None] * g[:, :, geometry.perms]).sum(3)  # [m, N, S, 3]: Σ_e g[c, e] g[c, πe]
        d += (t * (c1[:, None, :] * fixed[None])[..., None]).sum(2)
        left = vjp(g[:, None], u)  # [m, S, N, 3]
        u_back = u.gather(-1, geometry.inv_dperms[None].expand(len(frames), -1, -1))
        right = vjp(g[:, None], u_back)
        d -= (c2[..., None, None] * left * right).sum(1)
        out.append(d)
    return torch.cat(out) if out else geometry.x.new_zeros(0, n, 3)
