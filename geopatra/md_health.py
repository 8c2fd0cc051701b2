"""Is an MD run physical? Bounds a healthy trajectory of a molecule stays within, and the verdict.

Two kinds of failure, told apart because a script reacts differently to each:

- **exploded** (exit status 3 of ``geopatra md``): the integration itself broke down: non-finite
  energies, an NVE total energy that moved by more than ``MAX_ENERGY_CHANGE_EV_PER_ATOM``, or atoms
  closer than ``MIN_DISTANCE_ANGSTROM``. The run stops there.
- **unphysical** (exit status 4): energy is conserved, but the model has left the region it was
  trained on and the trajectory no longer describes the molecule: two atoms closer than
  ``BOND_FRACTION`` times the sum of their covalent radii (well below any bond between them: at
  300 K bonds compress by a few per cent), an NVE mean temperature more than
  ``MAX_TEMPERATURE_CHANGE_K`` away from the starting one (a hole in the surface turns potential
  into kinetic energy), or a force above ``MAX_FORCE_EV_PER_ANGSTROM``.

Units: Å, eV, K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import chemical_symbols, covalent_radii

#: Closest approach [Å] below which a run counts as exploded.
MIN_DISTANCE_ANGSTROM = 0.5
#: Total-energy change [eV/atom] beyond which an NVE run counts as exploded.
MAX_ENERGY_CHANGE_EV_PER_ATOM = 1.0
#: A pair closer than this fraction of the sum of its covalent radii (ASE's table) is unphysical:
#: C-H 0.80 Å, O-H 0.73 Å, H-H 0.47 Å, C-C 1.14 Å.
BOND_FRACTION = 0.75
#: |mean temperature of the second half - starting temperature| [K] beyond which an NVE run is unphysical.
MAX_TEMPERATURE_CHANGE_K = 150.0
#: Largest force [eV/Å] on any atom in a healthy run (about 230 kcal/mol/Å).
MAX_FORCE_EV_PER_ANGSTROM = 10.0


def contact_bounds(z: np.ndarray) -> np.ndarray:
    """Closest physical approach [Å] of every pair of atoms [n_atoms, n_atoms]: ``BOND_FRACTION`` times
    the sum of covalent radii (diagonal: 0)."""
    radii = covalent_radii[np.asarray(z, dtype=int)]
    bounds = BOND_FRACTION * (radii[:, None] + radii[None, :])
    np.fill_diagonal(bounds, 0.0)
    return bounds


@dataclass(frozen=True)
class Contact:
    """The pair of atoms closest to (or furthest below) its contact bound in one geometry."""

    ratio: float  # distance / bound; < 1 is unphysical
    distance: float  # Å
    i: int
    j: int
    min_distance: float  # the closest interatomic distance of the geometry (any pair), Å


def closest_contact(positions: np.ndarray, bounds: np.ndarray) -> Contact:
    """The pair with the smallest distance / contact bound, for positions [n_atoms, 3] Å (and the
    geometry's closest distance, from the same distance matrix)."""
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    iu = np.triu_indices(len(positions), 1)
    pairs = d[iu]
    ratios = pairs / bounds[iu]
    k = int(np.argmin(ratios))
    return Contact(float(ratios[k]), float(pairs[k]), int(iu[0][k]), int(iu[1][k]), float(pairs.min()))


def unphysical_reasons(
    z: np.ndarray,
    worst: Contact,
    temperature_k: np.ndarray,
    max_force_ev_per_angstrom: float,
    ensemble: str,
) -> list[str]:
    """Why a finished (not exploded) run is unphysical; empty for a healthy one.

    Args:
        z: atomic numbers [n_atoms].
        worst: the closest contact over the whole run (:func:`closest_contact` per frame, minimum ratio).
        temperature_k: instantaneous temperature of each logged frame [n_frames], K.
        max_force_ev_per_angstrom: largest force on any atom over the run, eV/Å.
        ensemble: "nve" or "langevin" (the temperature bound applies to NVE only).
    """
    reasons = []
    if worst.ratio < 1.0:
        a, b = chemical_symbols[int(z[worst.i])], chemical_symbols[int(z[worst.j])]
        bound = worst.distance / worst.ratio
        reasons.append(
            f"atoms {worst.i} ({a}) and {worst.j} ({b}) came {worst.distance:.2f} Å apart, below "
            f"{bound:.2f} Å ({BOND_FRACTION:g} x the sum of their covalent radii)"
        )
    if ensemble == "nve" and len(temperature_k) > 1:
        start, late = float(temperature_k[0]), float(np.mean(temperature_k[len(temperature_k) // 2 :]))
        if abs(late - start) > MAX_TEMPERATURE_CHANGE_K:
            reasons.append(
                f"NVE temperature moved from {start:.0f} K to a mean of {late:.0f} K over the second half "
                f"(more than {MAX_TEMPERATURE_CHANGE_K:g} K): the potential energy fell into a hole"
            )
    if max_force_ev_per_angstrom > MAX_FORCE_EV_PER_ANGSTROM:
        reasons.append(
            f"a force of {max_force_ev_per_angstrom:.1f} eV/Å (bound {MAX_FORCE_EV_PER_ANGSTROM:g} eV/Å)"
        )
    return reasons
