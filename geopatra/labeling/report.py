"""Sanity statistics of a labelled trajectory: exploded frames, broken bonds, label ranges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import covalent_radii

#: Atoms closer than ``BOND_FACTOR`` x the sum of their covalent radii count as bonded.
BOND_FACTOR = 1.25


@dataclass(frozen=True)
class TrajectoryReport:
    """Summary of a labelled trajectory (R [n,N,3] Å, E [n] kcal/mol, F [n,N,3] kcal/mol/Å).

    Attributes:
        n_frames, n_atoms: sizes.
        min_distance: smallest interatomic distance over all frames [Å].
        max_bond_stretch: largest bonded distance / sum of covalent radii (bonds of frame 0).
        frames_with_changed_bonds: frames whose bond graph differs from frame 0's.
        energy_mean, energy_std, energy_min, energy_max: energies [kcal/mol].
        force_rms: root mean square force component [kcal/mol/Å].
        force_max: largest per-atom force norm [kcal/mol/Å].
        max_net_force: largest norm of the summed forces of a frame [kcal/mol/Å] (≈0).
    """

    n_frames: int
    n_atoms: int
    min_distance: float
    max_bond_stretch: float
    frames_with_changed_bonds: int
    energy_mean: float
    energy_std: float
    energy_min: float
    energy_max: float
    force_rms: float
    force_max: float
    max_net_force: float

    def lines(self) -> list[str]:
        geometry = (
            f"min interatomic distance {self.min_distance:.3f} Å; max bond stretch "
            f"{self.max_bond_stretch:.3f} x covalent; frames with changed bonds "
            f"{self.frames_with_changed_bonds}"
        )
        energy = (
            f"E mean {self.energy_mean:.3f}, std {self.energy_std:.3f}, range "
            f"[{self.energy_min:.3f}, {self.energy_max:.3f}] kcal/mol"
        )
        force = (
            f"F rms component {self.force_rms:.3f}, max |F| {self.force_max:.3f}, max |sum F| "
            f"{self.max_net_force:.2e} kcal/mol/Å"
        )
        return [f"frames {self.n_frames} x {self.n_atoms} atoms", geometry, energy, force]


def _bonds(positions: np.ndarray, limits: np.ndarray) -> np.ndarray:
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    return distance < limits


def trajectory_report(
    R: np.ndarray, z: np.ndarray, E: np.ndarray, F: np.ndarray
) -> TrajectoryReport:
    """Compute a :class:`TrajectoryReport` (frame by frame, O(n N^2) memory-light)."""
    radii = covalent_radii[np.asarray(z)]
    sum_radii = radii[:, None] + radii[None]
    limits = BOND_FACTOR * sum_radii
    reference = _bonds(R[0], limits)
    min_distance, max_stretch, changed = np.inf, 0.0, 0
    for positions in R:
        distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        np.fill_diagonal(distance, np.inf)
        min_distance = min(min_distance, float(distance.min()))
        max_stretch = max(max_stretch, float((distance / sum_radii)[reference].max()))
        changed += int(not np.array_equal(distance < limits, reference))
    E = np.asarray(E).reshape(-1)
    norms = np.linalg.norm(F, axis=-1)
    return TrajectoryReport(
        n_frames=int(R.shape[0]),
        n_atoms=int(R.shape[1]),
        min_distance=min_distance,
        max_bond_stretch=max_stretch,
        frames_with_changed_bonds=changed,
        energy_mean=float(E.mean()),
        energy_std=float(E.std()),
        energy_min=float(E.min()),
        energy_max=float(E.max()),
        force_rms=float(np.sqrt(np.mean(F**2))),
        force_max=float(norms.max()),
        max_net_force=float(np.linalg.norm(F.sum(axis=1), axis=-1).max()),
    )
