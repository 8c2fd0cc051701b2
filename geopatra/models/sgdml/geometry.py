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
class EntryClass:
    """Descriptor entries that the permutations move alike: ``(P_p x)[entries] = x[images[coset[p]]]``.

    Permutations in one coset send every entry of the class to the same place, so a sum over the S
    permutations of anything built from ``P_p x`` on these entries needs only one term per coset
    (entries no permutation moves: one coset; pairs of one methyl rotor's atoms with the rest: 3).
    """

    entries: Tensor  #: [Dc] descriptor entries of the class
    coset: Tensor  #: [S] coset of each permutation
    images: Tensor  #: [cosets, Dc] where each coset sends the entries
    x: Tensor  #: [M, cosets, Dc] the training descriptors x_j[images]

    @property
    def n_cosets(self) -> int:
        return int(self.images.shape[0])


def entry_classes(dperms: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Descriptor entries grouped by the partition of the permutations ``dperms`` [S, D] into those that
    send them to the same place: ``(entries [Dc], coset [S], images [cosets, Dc])`` per class."""
    s, d = dperms.shape
    device = dperms.device
    _, place = torch.unique(torch.arange(d, device=device)[None] * d + dperms, return_inverse=True)  # [S, D]
    p_of = torch.arange(s, device=device)[:, None].expand(s, d).reshape(-1)
    first = torch.full((int(place.max()) + 1,), s, dtype=torch.long, device=device)
    first = first.scatter_reduce(0, place.reshape(-1), p_of, reduce="amin")
    labels = first[place]  # [S, D]: the first permutation that sends entry d where p sends it
    partitions, class_of = torch.unique(labels.T, dim=0, return_inverse=True)
    out = []
    for c in range(partitions.shape[0]):
        entries = torch.nonzero(class_of == c).flatten()
        representatives, coset = torch.unique(partitions[c], return_inverse=True)
        out.append((entries, coset, dperms[representatives][:, entries]))
    return out


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
    x_sq: Tensor  #: [M] |x_j|² (= |P_p x_j|² for every p)
    classes: tuple[EntryClass, ...]  #: the descriptor entries grouped by how the permutations move them

    @classmethod
    def of(cls, R: Tensor, perms: Tensor, device: torch.device | str | None = None) -> KernelGeometry:
        """The geometry of training positions ``R`` [M, N, 3] (Å) under ``perms`` [S, N], on ``device``
        (default: ``R.device``)."""
        device = torch.device(device) if device is not None else R.device
        R = R.to(device, torch.float64)
        perms = perms.to(device, torch.long)
        x = descriptor(R)
        dperms = torch.stack([descriptor_permutation(p) for p in perms])
        classes = tuple(EntryClass(entries, coset, images, x[:, images])
                        for entries, coset, images in entry_classes(dperms))
        return cls(R=R, perms=perms, x=x, g=pair_gradients(R), dperms=dperms,
                   inv_perms=torch.argsort(perms, dim=1), inv_dperms=torch.argsort(dperms, dim=1),
                   x_sq=(x * x).sum(-1), classes=classes)

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
        ``frames`` (all by default), by the ``|x|² + |y|² - 2 x·y`` expansion, clamped at 0."""
        dots = self.permuted_dots(xq, [c.x[frames][:, :, None] for c in self.classes])[..., 0]
        return ((xq * xq).sum(-1)[:, None, None] + self.x_sq[frames][None, :, None] - 2.0 * dots).clamp_min(0.0)

    def permuted_dots(self, xq: Tensor, per_class: list[Tensor]) -> Tensor:
        """``xq_i · P_p y_jv`` [Q, m, S, k] of query descriptors ``xq`` [Q, D] and k vectors per frame
        y given per entry class as ``y[images]`` [m, cosets, k, Dc] (``EntryClass.x`` for y = x).

        One GEMM per class over its cosets (not over all S permutations), then each permutation takes
        its coset's value: the cost is ``Σ_c cosets_c · Dc`` (T), not ``S · D``."""
        out = None
        for entry_class, y in zip(self.classes, per_class):
            m, cosets, k, dc = y.shape
            dots = (xq[:, entry_class.entries] @ y.reshape(m * cosets * k, dc).T).view(-1, m, cosets, k)
            dots = dots if cosets == 1 else dots[:, :, entry_class.coset]  # [Q, m, S or 1, k]
            out = dots if out is None else out + dots
        return out.expand(-1, -1, self.n_perms, -1)

    def coset_sums(self, values: Tensor, entry_class: EntryClass) -> Tensor:
        """Sums of ``values`` [Q, m, S, ...] over the permutations of each coset of ``entry_class``:
        [Q, m, cosets, ...]."""
        if entry_class.n_cosets == 1:
            return values.sum(2, keepdim=True)
        shape = (*values.shape[:2], entry_class.n_cosets, *values.shape[3:])
        return values.new_zeros(shape).index_add_(2, entry_class.coset, values)

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
