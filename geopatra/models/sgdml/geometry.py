"""The σ-independent arrays of the sGDML kernel on a training set: descriptors, their Jacobians, the
permutation group in atom and descriptor space, and the tables of the dense block formula.

A :class:`KernelGeometry` is built once per (training frames, permutations) and shared by the kernels
of every σ (:class:`geopatra.models.sgdml.kernel.SGDMLKernel` is a geometry plus σ). It is frozen;
its block tables (:class:`BlockTables`), which only the dense blocks need, are computed on first use.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from geopatra.models.sgdml.descriptor import (
    descriptor,
    descriptor_permutation,
    pair_gradients,
    pair_indices,
    to_square,
    vjp,
)


@dataclass(frozen=True, eq=False)
class BlockTables:
    """σ-independent tables of the dense block formula (:mod:`geopatra.models.sgdml.blocks`).

    The symmetrised c1 part is ``J_iᵀ C J_j`` with ``C = Σ_p c1_p P_p``, a D x D matrix whose nonzeros
    are the distinct descriptor-pair transitions ``(d, d' = π_p d)`` over the group: T of them (a few
    per pair d: ``|orbit(a)| |orbit(b)|`` at most, however large S is), so ``C = c1 @ ind`` with the
    0/1 matrix ``ind``. Each transition links the atoms of d to those of d' (4 atom pairs, the "q"
    entries): ``K[(c, ·), (c2, ·)] += C_t g_i[c, e] ⊗ g_j[c2, e2]``.
    """

    ind: Tensor  #: [S, T] ind[p, t] = 1 if transition t = (d, π_p d)
    q_t: Tensor  #: [4T] transition of each q entry
    q_c: Tensor  #: [4T] atom c
    q_e: Tensor  #: [4T] atom e (d = (c, e))
    q_c2: Tensor  #: [4T] atom c2
    q_e2: Tensor  #: [4T] atom e2 (d' = (c2, e2))
    q_slot: Tensor  #: [4T] c * N + c2
    x_t: Tensor  #: [N, M, N] x_j as symmetric matrices, as [a, j, b]
    g_t: Tensor  #: [N, N, M, 3] g_j[a, b, l] as [a, b, j, l]
    jtx: Tensor  #: [M, N, 3] J_jᵀ x_j


@dataclass(frozen=True, eq=False)
class KernelGeometry:
    """Training frames and their symmetry group in the form the kernel products need (float64).

    Build with :meth:`of`. Shapes: M frames, N atoms, D = N(N-1)/2 descriptor entries, S permutations.
    """

    R: Tensor  #: [M, N, 3] training positions, Å
    perms: Tensor  #: [S, N] atom permutations (the identity included)
    x: Tensor  #: [M, D] descriptors, 1/Å
    g: Tensor  #: [M, N, N, 3] pair gradients (the descriptor Jacobians)
    dperms: Tensor  #: [S, D] the permutations acting on descriptors
    inv_perms: Tensor  #: [S, N]
    inv_dperms: Tensor  #: [S, D]: P_pᵀ y = y[inv_dperms[p]]
    fixed: Tensor  #: [Df] descriptor entries no permutation moves (pairs of atoms every p fixes)
    moving: Tensor  #: [Dm] the others (Df + Dm = D); a permutation maps moving entries to moving ones
    x_fixed: Tensor  #: [M, Df] x_j on the fixed entries (= P_p x_j there, for every p)
    x_fixed_sq: Tensor  #: [M] |x_j|² over the fixed entries
    x_moving: Tensor  #: [M*S, Dm] P_p x_j on the moving entries
    x_moving_sq: Tensor  #: [M*S] |P_p x_j|² over the moving entries

    @classmethod
    def of(cls, R: Tensor, perms: Tensor, device: torch.device | str | None = None) -> KernelGeometry:
        """The geometry of training positions ``R`` [M, N, 3] (Å) under ``perms`` [S, N], on ``device``
        (default: ``R.device``)."""
        device = torch.device(device) if device is not None else R.device
        R = R.to(device, torch.float64)
        perms = perms.to(device, torch.long)
        x = descriptor(R)
        dperms = torch.stack([descriptor_permutation(p) for p in perms])
        moves = (dperms != torch.arange(dperms.shape[1], device=device)).any(dim=0)
        fixed, moving = torch.nonzero(~moves).flatten(), torch.nonzero(moves).flatten()
        x_fixed = x[:, fixed]
        x_moving = x[:, dperms[:, moving]].reshape(R.shape[0] * len(perms), moving.numel())
        return cls(R=R, perms=perms, x=x, g=pair_gradients(R), dperms=dperms,
                   inv_perms=torch.argsort(perms, dim=1), inv_dperms=torch.argsort(dperms, dim=1),
                   fixed=fixed, moving=moving, x_fixed=x_fixed, x_fixed_sq=(x_fixed * x_fixed).sum(-1),
                   x_moving=x_moving, x_moving_sq=(x_moving * x_moving).sum(-1))

    @property
    def device(self) -> torch.device:
        return self.R.device

    @property
    def n_frames(self) -> int:
        return int(self.R.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.R.shape[1])

    @property
    def n_perms(self) -> int:
        return int(self.perms.shape[0])

    def permuted(self, frames: Tensor | slice) -> Tensor:
        """``P_p x_j`` [m, S, D] of the training frames ``frames``."""
        return self.x[frames][:, self.dperms]

    def squared_distances(self, xq: Tensor, frames: Tensor | slice = slice(None)) -> Tensor:
        """``|xq_i - P_p x_j|²`` [Q, m, S] for query descriptors ``xq`` [Q, D] and training frames
        ``frames`` (all by default), by the ``|x|² + |y|² - 2 x·y`` expansion, clamped at 0. The
        fixed entries are the same for every p, so they cost one product per frame, not S."""
        xf, xm = xq[:, self.fixed], xq[:, self.moving]
        fixed = ((xf * xf).sum(-1, keepdim=True) + self.x_fixed_sq[frames][None]
                 - 2.0 * (xf @ self.x_fixed[frames].T))  # [Q, m]
        s = self.n_perms
        x_moving = self.x_moving.view(self.n_frames, s, self.moving.numel())[frames]  # [m, S, Dm]
        # [Q, m, S] below
        moving = ((xm * xm).sum(-1)[:, None, None] + self.x_moving_sq.view(self.n_frames, s)[frames][None]
                  - 2.0 * (xm @ x_moving.reshape(len(x_moving) * s, xm.shape[1]).T).view(xq.shape[0], len(x_moving), s))
        return (fixed[:, :, None] + moving).clamp_min(0.0)

    @functools.cached_property
    def block_tables(self) -> BlockTables:
        """The tables of the dense block formula, computed on first use (see :class:`BlockTables`)."""
        n, n_desc, device = self.n_atoms, self.x.shape[1], self.device
        keys = torch.arange(n_desc, device=device)[None] * n_desc + self.dperms  # [S, D]: (d, π_p d)
        uniq, inverse = torch.unique(keys, return_inverse=True)
        ind = self.x.new_zeros(self.n_perms, uniq.numel())
        ind.scatter_(1, inverse, 1.0)
        a, b = pair_indices(n, device)
        d_from, d_to = uniq // n_desc, uniq % n_desc
        q = []
        for c, e in ((a[d_from], b[d_from]), (b[d_from], a[d_from])):
            for c2, e2 in ((a[d_to], b[d_to]), (b[d_to], a[d_to])):
                q.append(torch.stack([c, e, c2, e2]))
        q = torch.cat(q, dim=1)  # [4, 4T]
        return BlockTables(
            ind=ind, q_t=torch.arange(uniq.numel(), device=device).repeat(4),
            q_c=q[0], q_e=q[1], q_c2=q[2], q_e2=q[3], q_slot=q[0] * n + q[2],
            x_t=to_square(self.x, n).permute(1, 0, 2).contiguous(),
            g_t=self.g.permute(1, 2, 0, 3).contiguous(),
            jtx=vjp(self.g, self.x),
        )
