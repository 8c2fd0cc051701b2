"""The one in-memory dataset every reader returns: a trajectory of one molecule with labels.

Arrays are float64 in the internal units (Å, kcal/mol, kcal/mol/Å) whatever the file held.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from geopatra.units import SGDML_UNITS, Units


def fingerprint_arrays(R: np.ndarray, z: np.ndarray, E: np.ndarray, F: np.ndarray) -> str:
    """sha256 over the canonical arrays (float64 / int64, C order): identifies the data, not the file."""
    digest = hashlib.sha256()
    for array, dtype in ((R, np.float64), (z, np.int64), (E, np.float64), (F, np.float64)):
        canonical = np.ascontiguousarray(array, dtype=dtype)
        digest.update(str(canonical.shape).encode())
        digest.update(canonical.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class MolecularDataset:
    """Frames of one molecule with energies and forces.

    Attributes:
        R: positions [n_frames, n_atoms, 3], Å.
        z: atomic numbers [n_atoms], the same for every frame.
        E: energies [n_frames], kcal/mol.
        F: forces [n_frames, n_atoms, 3], kcal/mol/Å.
        name: molecule or dataset name.
        theory: level of theory of the labels.
        source: the file it was read from ('' if built in memory).
        units: always :data:`SGDML_UNITS` (Å, kcal/mol); ``source_units`` holds what the file held.
        indices: index of each frame in the source file [n_frames] (a subset keeps them).
        metadata: anything else the file carried (temperature, time step, ...).
    """

    R: np.ndarray
    z: np.ndarray
    E: np.ndarray
    F: np.ndarray
    name: str = ""
    theory: str = "unknown"
    source: str = ""
    source_units: Units = SGDML_UNITS
    indices: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Local import: validate imports errors only, no cycle, but keeps this module light.
        from geopatra.data.validate import validate_arrays

        R, z, E, F = validate_arrays(self.R, self.z, self.E, self.F, source=self.source or "<memory>")
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "z", z)
        object.__setattr__(self, "E", E)
        object.__setattr__(self, "F", F)
        if self.indices is None:
            object.__setattr__(self, "indices", np.arange(len(E), dtype=np.int64))
        for array in (self.R, self.z, self.E, self.F, self.indices):
            array.setflags(write=False)

    units: Units = field(default=SGDML_UNITS, init=False)

    @property
    def n_frames(self) -> int:
        return int(self.E.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.z.shape[0])

    def __len__(self) -> int:
        return self.n_frames

    @property
    def formula(self) -> str:
        """Chemical formula of the molecule (Hill order), e.g. ``C2H6O``."""
        return _formula(self.z)

    @property
    def fingerprint(self) -> str:
        """sha256 of the arrays of the *whole* source dataset this object holds (see :func:`fingerprint_arrays`)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            cached = fingerprint_arrays(self.R, self.z, self.E, self.F)
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def pair_distance_range(self, pairs_per_chunk: int = 2**20) -> tuple[float, float]:
        """Shortest and largest distance between two atoms over every frame, Å (the largest is the
        range GeoPaTra's radial basis should resolve: its ``rbf_max``). Frames are taken in chunks of
        about ``pairs_per_chunk`` atom pairs (memory ~100 bytes per pair). Needs at least two atoms."""
        if self.n_atoms < 2:
            raise ValueError("a pair distance needs at least two atoms")
        i, j = np.triu_indices(self.n_atoms, k=1)
        frames_per_chunk = max(1, pairs_per_chunk // len(i))
        shortest, largest = np.inf, 0.0
        for start in range(0, self.n_frames, frames_per_chunk):
            R = self.R[start : start + frames_per_chunk]
            d = np.linalg.norm(R[:, i] - R[:, j], axis=-1)  # [chunk, pairs]
            shortest, largest = min(shortest, float(d.min())), max(largest, float(d.max()))
        return shortest, largest

    def subset(self, frames: np.ndarray) -> MolecularDataset:
        """The frames at positions ``frames`` of this dataset; ``indices`` keep pointing into the source."""
        frames = np.asarray(frames, dtype=np.int64)
        return MolecularDataset(
            R=self.R[frames],
            z=self.z,
            E=self.E[frames],
            F=self.F[frames],
            name=self.name,
            theory=self.theory,
            source=self.source,
            source_units=self.source_units,
            indices=self.indices[frames],
            metadata=dict(self.metadata),
        )

    def summary(self) -> str:
        """A few human-readable lines: size, elements, energy and force ranges with units."""
        symbols = self.formula
        f_norm = np.linalg.norm(self.F, axis=-1)
        return "\n".join(
            [
                f"dataset   {self.name or '(unnamed)'}  [{self.theory}]  {self.source}",
                f"molecule  {symbols}  ({self.n_atoms} atoms)",
                f"frames    {self.n_frames}",
                f"energy    {self.E.min():.3f} .. {self.E.max():.3f} kcal/mol "
                f"(std {self.E.std():.3f})",
                f"|force|   mean {f_norm.mean():.3f}, max {f_norm.max():.3f} kcal/mol/Å",
                *self._distance_lines(),
                f"units     file: {self.source_units.length}, {self.source_units.energy}; "
                f"stored: Å, kcal/mol",
                f"sha256    {self.fingerprint}",
            ]
        )

    def _distance_lines(self) -> list[str]:
        if self.n_atoms < 2:
            return []
        shortest, largest = self.pair_distance_range()
        return [f"distance  {shortest:.2f} .. {largest:.2f} Å between two atoms (set GeoPaTra's rbf_max to about "
                "the largest)"]


def _formula(z: np.ndarray) -> str:
    from ase.symbols import Symbols

    return Symbols(z).get_chemical_formula(mode="hill")
