"""Permutational symmetries of a molecule, detected from its training geometries (as sGDML does).

1. Match pairs of training geometries: for geometries i, j an element-preserving atom assignment
   (``scipy.optimize.linear_sum_assignment``) is computed on a cost comparing every atom's sorted
   distances to the atoms of each element; it is kept if it makes the distance matrices of i and j
   agree better than the identity does.
2. Synchronise: the matches along a minimum spanning tree of the pairwise mismatch (so that every
   geometry is related to every other through its closest neighbours) are collected.
3. Close the set under composition (transitive closure) into a group. If the group would exceed
   ``max_symmetries``, the permutations whose cycles overlap longer cycles of others are dropped
   (the sGDML "salvage" step) and closure is retried; if that still fails, only the identity is
   kept and a warning is logged.

Everything is deterministic: the geometries used are evenly spaced over the training set (by
position), and ties are broken by index order.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

from geopatra.errors import DataError

logger = logging.getLogger(__name__)


def _atom_profiles(D: np.ndarray, z: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """Per atom, its sorted distances to the atoms of each element, concatenated [N, N]."""
    parts = [np.sort(D[:, z == e], axis=1) for e in elements]
    return np.concatenate(parts, axis=1)


def match_geometries(Ri: np.ndarray, Rj: np.ndarray, z: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Best element-preserving assignment ``perm`` [N] with ``D_i[perm][:, perm] ≈ D_j``.

    Returns ``(perm, mismatch)``; ``perm`` is None when the identity is as good.
    """
    Di, Dj = squareform(pdist(Ri)), squareform(pdist(Rj))
    elements = np.unique(z)
    pi, pj = _atom_profiles(Di, z, elements), _atom_profiles(Dj, z, elements)
    cost = np.linalg.norm(pj[:, None, :] - pi[None, :, :], axis=-1)  # [atom of j, atom of i]
    cost = cost + (z[:, None] != z[None, :]) * (cost.max() + 1.0) * len(z)
    _, perm = linear_sum_assignment(cost)
    before = float(np.linalg.norm(Di - Dj))
    if np.any(z[perm] != z):
        return None, before
    after = float(np.linalg.norm(Di[perm][:, perm] - Dj))
    if after >= before or np.array_equal(perm, np.arange(len(z))) or np.isclose(after, before):
        return None, before
    return perm, after


def close_group(perms: np.ndarray, max_size: int) -> np.ndarray | None:
    """Closure of ``perms`` [k, N] under composition, sorted; None if it exceeds ``max_size``."""
    group = {tuple(p) for p in perms}
    group.add(tuple(range(perms.shape[1])))
    if len(group) > max_size:
        return None
    frontier = list(group)
    while frontier:
        new = []
        for p in frontier:
            pa = np.asarray(p)
            for q in list(group):
                for r in (tuple(pa[np.asarray(q)]), tuple(np.asarray(q)[pa])):
                    if r not in group:
                        group.add(r)
                        new.append(r)
                        if len(group) > max_size:
                            return None
        frontier = new
    return np.array(sorted(group), dtype=np.int64)


def _cycles(perm: np.ndarray) -> list[list[int]]:
    seen, out = set(), []
    for start in range(len(perm)):
        if start in seen:
            continue
        cycle, a = [], start
        while a not in seen:
            seen.add(a)
            cycle.append(a)
            a = int(perm[a])
        if len(cycle) > 1:
            out.append(cycle)
    return out


def _salvage(perms: np.ndarray) -> np.ndarray:
    """Drop permutations with a cycle that intersects a longer cycle of another permutation."""
    all_cycles = [c for p in perms for c in _cycles(p)]

    def overlaps_longer(cycle: list[int]) -> bool:
        return any(len(cycle) < len(o) and not set(cycle).isdisjoint(o) for o in all_cycles)

    keep = [p for p in perms if not any(overlaps_longer(c) for c in _cycles(p))]
    return np.array(keep, dtype=np.int64).reshape(-1, perms.shape[1])


def find_permutations(
    R: np.ndarray, z: np.ndarray, *, max_symmetries: int = 512, max_geometries: int = 200
) -> np.ndarray:
    """Permutation group [S, N] of the molecule detected from geometries ``R`` [M, N, 3] (Å).

    Args:
        R: training geometries. z: atomic numbers [N].
        max_symmetries: largest group accepted (see module docstring).
        max_geometries: at most this many geometries, evenly spaced over ``R``, are matched
            (O(m²) assignments).

    Returns:
        int64 array [S, N], rows sorted lexicographically (the identity first), ``S >= 1``.
    """
    R, z = np.asarray(R, dtype=np.float64), np.asarray(z)
    if R.ndim != 3 or R.shape[1:] != (len(z), 3):
        raise DataError(f"find_permutations: R has shape {R.shape}; expected (M, {len(z)}, 3)")
    m = R.shape[0]
    sel = np.unique(np.linspace(0, m - 1, min(m, max_geometries)).round().astype(int))
    R = R[sel]
    m, n = len(sel), len(z)
    cost = np.zeros((m, m))
    matches: dict[tuple[int, int], np.ndarray] = {}
    for i in range(m):
        for j in range(i + 1, m):
            perm, mismatch = match_geometries(R[i], R[j], z)
            cost[i, j] = mismatch + 1e-12  # >0 so that the edge exists in the graph
            if perm is not None:
                matches[i, j] = perm
    identity = np.arange(n)[None, :]
    if m < 2:
        return identity.astype(np.int64)
    tree = minimum_spanning_tree(csr_matrix(cost))
    rows, cols = tree.nonzero()
    found = [matches[e] for e in sorted(zip(rows.tolist(), cols.tolist())) if e in matches]
    perms = np.unique(np.vstack([identity, *found]), axis=0) if found else identity
    group = close_group(perms, max_symmetries)
    if group is None:
        group = close_group(_salvage(perms), max_symmetries)
    if group is None:
        logger.warning(
            "symmetry detection: the permutations found do not close into a group of at most "
            "%d elements; using no symmetries (pass permutations explicitly to override)",
            max_symmetries,
        )
        group = identity.astype(np.int64)
    logger.info("symmetry detection: %d permutations from %d geometries", len(group), m)
    return group
