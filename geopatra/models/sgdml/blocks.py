"""Dense blocks of the sGDML Hessian kernel in atom space (for columns and the exact solver).

With the pair gradients ``g`` of :mod:`geopatra.models.sgdml.descriptor` (``J v`` has entries
``g[a, e] · (v_a - v_e)``), a permutation ``π = perms[p]`` acting on training frame j, and
``c1, c2`` at ``u = x_i - P_p x_j`` (:mod:`geopatra.models.sgdml.kernel`), the atom blocks
``(c, k) x (c', l)`` of ``K[i, j] = Σ_p J_iᵀ (c1 I - c2 u uᵀ) P_p J_j`` are

    off-atom      -c1 · g_i[c, π⁻¹c', k] · g_j[πc, c', l]          (one pair links c and c')
    diagonal       c1 · Σ_e g_i[c, e, k] g_j[πc, πe, l]   at c' = πc  (all pairs of atom c)
    rank S        -c2 · (J_iᵀ u)[c, k] · (J_jᵀ P_pᵀ u)[c', l]

summed over p. The off-atom term is zero at ``c' = πc`` (``g[c, c] = 0``), so it is applied to
every ``(c, c')``. Each term is a broadcast product or a small batched GEMM; the cost of a tile of
``m x b`` frame pairs is ``O(m b S N²)``, the size of its output times S.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from geopatra.models.sgdml.descriptor import to_square, vjp

if TYPE_CHECKING:
    from geopatra.models.sgdml.kernel import SGDMLKernel

#: Frames per chunk in :func:`diagonal_blocks`.
_DIAG_CHUNK = 64


def matern_coefficients(r: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """``(c1, c2)`` of the Matérn 5/2 Hessian (see :mod:`geopatra.models.sgdml.kernel`) at
    descriptor distances ``r`` (1/Å) for length scale ``sigma``."""
    a = math.sqrt(5.0) / sigma
    e = torch.exp(-a * r)
    c1 = (5.0 / (3.0 * sigma**2)) * (1.0 + a * r) * e
    c2 = (25.0 / (3.0 * sigma**4)) * e
    return c1, c2


def block_tables(op: SGDMLKernel) -> dict[str, Tensor]:
    """σ-independent tables of the block formula for all training frames, computed once per
    operator and cached on it (about ``3 S M N²`` entries)::

        x_sq   [N, M, S, N]     (P_p x_j)[a, b]  as  [a, j, p, b]
        xt_sq  [M, N, S, N]     (P_pᵀ x_i)[a, b] as  [i, a, p, b]
        jtx    [M, N, 3]        J_jᵀ x_j
        g_t    [N, N, M, 3]     g_j[a, b, l]     as  [a, b, j, l]
        g_rows [S, N, M, N, 3]  g_j[πc, c', l]   as  [p, c, j, c', l]
        g_both [N, N, M, S, 3]  g_j[πc, πe, l]   as  [c, e, j, p, l]
    """
    tables = op.__dict__.get("_block_tables")
    if tables is not None:
        return tables
    m, n, s_count = op.n_frames, op.n_atoms, op.n_perms
    x_perm = op.x_perm.view(m, s_count, -1)
    g_rows = torch.stack([op.g[:, p] for p in op.perms])  # [S, M, c, c', l]
    g_both = torch.stack([op.g[:, p][:, :, p] for p in op.perms])  # [S, M, c, e, l]
    tables = {
        "x_sq": to_square(x_perm, n).permute(2, 0, 1, 3).contiguous(),
        "xt_sq": to_square(op.x[:, op.inv_dperms], n).permute(0, 2, 1, 3).contiguous(),
        "jtx": vjp(op.g, op.x),
        "g_t": op.g.permute(1, 2, 0, 3).contiguous(),
        "g_rows": g_rows.permute(0, 2, 1, 3, 4).contiguous(),
        "g_both": g_both.permute(2, 3, 1, 0, 4).contiguous(),
    }
    op.__dict__["_block_tables"] = tables
    return tables


def block_tile(op: SGDMLKernel, i: int, cols: Tensor | slice, out: Tensor) -> None:
    """Write ``K[i, cols]`` into ``out`` [3N, b, 3N] (any strided view).

    Args:
        op: the kernel operator (training frames, permutations, σ).
        i: the row frame.
        cols: column frame indices [b] (an index tensor, or a slice, which avoids copies).
        out: destination, indexed ``[(atom, xyz), j, (atom, xyz)]``.
    """
    t = block_tables(op)
    n, s_count = op.n_atoms, op.n_perms
    gi = op.g[i]  # [N, N, 3]
    g_t = t["g_t"][:, :, cols]  # [a, b', j, l]
    b = g_t.shape[2]
    u = op.x[i] - op.x_perm.view(op.n_frames, s_count, -1)[cols]  # [b, S, D]: x_i - P_p x_j
    c1, c2 = matern_coefficients(torch.linalg.vector_norm(u, dim=-1), op.sigma)  # [b, S]

    # Rank-S factors: -c2 (J_iᵀ u) and J_jᵀ P_pᵀ u (u = x_i - P_p x_j, P_pᵀ P_p = I).
    x_sq = t["x_sq"][:, cols].reshape(n, b * s_count, n)  # [a, (j, p), b']
    left = t["jtx"][i][:, None, None, :] - torch.bmm(x_sq, gi).view(n, b, s_count, 3)  # [c, j, p, k]
    left = (left * (-c2)[None, :, :, None]).permute(2, 0, 3, 1).contiguous()  # [p, c, k, j]
    right = torch.bmm(t["xt_sq"][i], g_t.reshape(n, n, b * 3)).view(n, s_count, b, 3)  # [c', p, j, l]
    right = right.permute(1, 2, 0, 3) - t["jtx"][cols][None]  # [p, j, c', l]
    right = right.contiguous()

    out.zero_()
    out5 = out.view(n, 3, b, n, 3)  # [c, k, j, c', l]
    for p in range(s_count):
        out5.addcmul_(left[p][:, :, :, None, None], right[p][None, None])
        # Off-atom term: -c1 g_i[c, π⁻¹c', k] g_j[πc, c', l] (x part repeated over l, so that
        # the innermost loop runs over (c', l) for every operand).
        x_part = gi[:, op.inv_perms[p]].permute(0, 2, 1)[:, :, None, :, None].expand(n, 3, 1, n, 3)
        y_part = c1[None, :, p, None, None] * t["g_rows"][p, :, cols]  # [c, j, c', l]
        out5.addcmul_(x_part.contiguous(), y_part[:, None], value=-1.0)
    # Diagonal term at c' = πc: c1 Σ_e g_i[c, e, k] g_j[πc, πe, l], one GEMM per atom c.
    right_g = t["g_both"][:, :, cols].reshape(n, n, b * s_count * 3)  # [c, e, (j, p, l)]
    diag = torch.bmm(gi.permute(0, 2, 1), right_g).view(n, 3, b, s_count, 3)  # [c, k, j, p, l]
    diag = (diag * c1[None, None, :, :, None]).permute(3, 0, 1, 2, 4)  # [p, c, k, j, l]
    atoms = torch.arange(n, device=out.device).repeat(s_count)
    out5.permute(0, 3, 1, 2, 4).index_put_(
        (atoms, op.perms.reshape(-1)), diag.reshape(s_count * n, 3, b, 3), accumulate=True
    )


def diagonal_blocks(op: SGDMLKernel) -> Tensor:
    """``diag(K)`` as [M, N, 3], from the formulas of the module docstring restricted to i = j."""
    n, s_count = op.n_atoms, op.n_perms
    atoms = torch.arange(n, device=op.device)
    fixed = (op.perms == atoms[None]).T.to(op.dtype)  # [N, S]: π c = c
    out = []
    for s in range(0, op.n_frames, _DIAG_CHUNK):
        frames = torch.arange(s, min(op.n_frames, s + _DIAG_CHUNK), device=op.device)
        g = op.g[frames]  # [m, N, N, 3]
        u = op.x[frames][:, None, :] - op.x_perm.view(op.n_frames, s_count, -1)[frames]  # [m, S, D]
        c1, c2 = matern_coefficients(torch.linalg.vector_norm(u, dim=-1), op.sigma)  # [m, S]
        a_part = g[:, atoms[None, :], op.inv_perms]  # [m, S, N, 3]: g[c, π⁻¹c]
        b_part = g[:, op.perms, atoms[None, :]]  # [m, S, N, 3]: g[πc, c]
        d = -(c1[..., None, None] * a_part * b_part).sum(1)  # [m, N, 3]
        t = (g[:, :, None] * g[:, :, op.perms]).sum(3)  # [m, N, S, 3]: Σ_e g[c, e] g[c, πe]
        d += (t * (c1[:, None, :] * fixed[None])[..., None]).sum(2)
        left = vjp(g[:, None], u)  # [m, S, N, 3]
        u_back = u.gather(-1, op.inv_dperms[None].expand(len(frames), -1, -1))
        right = vjp(g[:, None], u_back)
        d -= (c2[..., None, None] * left * right).sum(1)
        out.append(d)
    return torch.cat(out) if out else op.x.new_zeros(0, n, 3)
