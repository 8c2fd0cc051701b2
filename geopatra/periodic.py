"""A molecule in a periodic box, made whole: geopatra models are not periodic (every atom of the
molecule sees every other, no image), so a molecule split across the box edge is unwrapped first.

Atoms are joined along covalent bonds (distance below 1.25 x the sum of covalent radii, by minimum
image), each placed at the minimum image of its bonded neighbour; a fragment not bonded to the rest
(a host-guest complex, a counter-ion) is placed at the minimum image of its closest atom already
placed. Only the periodic directions are unwrapped.
"""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii
from ase.geometry import complete_cell

from geopatra.errors import PeriodicSystemError

#: Atoms closer than this times the sum of their covalent radii are bonded.
BOND_FACTOR = 1.25


def minimum_image(vectors: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Vectors [..., 3] Å moved by lattice vectors (rows of ``cell`` [3, 3] Å) along the periodic
    directions ``pbc`` [3] so that their fractional coordinates lie in [-0.5, 0.5)."""
    fractional = vectors @ np.linalg.inv(cell)
    fractional = np.where(pbc, fractional - np.floor(fractional + 0.5), fractional)
    return fractional @ cell


def make_whole(positions: np.ndarray, z: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """The positions [n_atoms, 3] Å of one molecule (atomic numbers ``z``) with no bond across the
    box edge, atom 0 kept in place.

    Raises:
        PeriodicSystemError: the cell is singular along a periodic direction, or the whole molecule
            is as long as the box, so that it would meet its own image.
    """
    pbc = np.asarray(pbc, dtype=bool)
    given = np.asarray(cell, dtype=np.float64)
    cell = complete_cell(given)  # vectors of non-periodic directions may be zero
    if np.any(pbc & (np.linalg.norm(given, axis=1) == 0)) or abs(np.linalg.det(cell)) < 1e-9:
        raise PeriodicSystemError(
            f"pbc={pbc.tolist()} with a singular cell {given.tolist()}; give the box or set pbc=False"
        )
    n = len(positions)
    delta = minimum_image(positions[None, :, :] - positions[:, None, :], cell, pbc)  # [i, j]: j - i
    distance = np.linalg.norm(delta, axis=-1)
    radii = covalent_radii[np.asarray(z, dtype=int)]
    bonded = distance < BOND_FACTOR * (radii[:, None] + radii[None, :])
    whole = np.array(positions, dtype=np.float64)
    placed = np.zeros(n, dtype=bool)
    placed[0] = True
    stack = [0]
    while True:
        while stack:
            i = stack.pop()
            for j in np.flatnonzero(bonded[i] & ~placed):
                whole[j] = whole[i] + delta[i, j]
                placed[j] = True
                stack.append(int(j))
        if placed.all():
            break
        # the next fragment: the unplaced atom closest to any placed one, at its minimum image
        gaps = np.where(placed[:, None] & ~placed[None, :], distance, np.inf)
        i, j = np.unravel_index(np.argmin(gaps), gaps.shape)
        whole[j] = whole[i] + delta[i, j]
        placed[j] = True
        stack.append(int(j))
    span = np.ptp(whole @ np.linalg.inv(cell), axis=0)
    # a bond seen through an image (the molecule nearly as long as the box) folds the molecule: then
    # some bonded pair is further apart in the unwrapped molecule than by minimum image
    stretched = np.linalg.norm(whole[None, :, :] - whole[:, None, :], axis=-1)[bonded] > distance[bonded] + 1e-6
    if np.any(pbc & (span >= 1.0)) or stretched.any():
        raise PeriodicSystemError(
            f"the molecule spans {np.round(span, 3).tolist()} box lengths: it meets its own image, and "
            "geopatra models describe isolated molecules; use a larger box"
        )
    return whole
