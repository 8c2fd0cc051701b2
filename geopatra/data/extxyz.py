"""Reader for extended-XYZ trajectories (through ``ase.io``) with energies and forces.

The energy is looked up in ``atoms.info`` (or the values ASE moved into its single-point calculator)
under ``energy_key``; by default ``energy`` then ``Energy`` (MD22 writes ``Energy=``). Forces come from
the per-atom ``forces`` array. Units default to Å and kcal/mol, as in the MD22 and rMD17 extxyz files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from geopatra.data.dataset import MolecularDataset
from geopatra.data.npz import convert_to_internal
from geopatra.errors import DataError, MissingKeyError, ShapeError
from geopatra.units import Units

DEFAULT_ENERGY_KEYS = ("energy", "Energy")


def _frame_value(atoms, key: str):
    """The value stored under ``key`` in ``atoms.info``, ``atoms.arrays`` or its calculator results."""
    if key in atoms.info:
        return atoms.info[key]
    if key in atoms.arrays:
        return atoms.arrays[key]
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    return None


def read_extxyz(
    path: str | os.PathLike,
    *,
    energy_key: str | None = None,
    forces_key: str = "forces",
    length_unit: str | None = None,
    energy_unit: str | None = None,
) -> MolecularDataset:
    """Read an extxyz trajectory into a validated :class:`MolecularDataset` (Å, kcal/mol).

    Args:
        energy_key: key of the per-frame energy; ``None`` tries ``energy`` then ``Energy``.
        forces_key: name of the per-atom force column.
        length_unit, energy_unit: units of the file (default Å and kcal/mol).
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as err:  # ase raises many types for malformed files
        raise DataError(f"{path}: not a readable extxyz file ({type(err).__name__}: {err})") from err
    if not frames:
        raise DataError(f"{path}: holds no frames")
    keys = (energy_key,) if energy_key else DEFAULT_ENERGY_KEYS
    n_atoms = len(frames[0])
    energies, forces, positions = [], [], []
    for index, atoms in enumerate(frames):
        if len(atoms) != n_atoms or not np.array_equal(atoms.numbers, frames[0].numbers):
            raise ShapeError(
                f"{path}: frame {index} holds {len(atoms)} atoms {atoms.get_chemical_formula()}; "
                f"expected {n_atoms} atoms {frames[0].get_chemical_formula()} in the same order as "
                "frame 0. A dataset holds one molecule."
            )
        energy = next((v for v in (_frame_value(atoms, k) for k in keys) if v is not None), None)
        if energy is None:
            raise MissingKeyError(
                f"{path}: frame {index} has no energy under {list(keys)}; found info keys "
                f"{sorted(atoms.info)}. Pass energy_key (--data.energy_key) naming the right one."
            )
        force = _frame_value(atoms, forces_key)
        if force is None:
            raise MissingKeyError(
                f"{path}: frame {index} has no per-atom {forces_key!r} column; found "
                f"{sorted(atoms.arrays)}. Pass forces_key naming the force column."
            )
        energies.append(float(np.asarray(energy).reshape(-1)[0]))
        forces.append(np.asarray(force, dtype=np.float64))
        positions.append(atoms.get_positions())
    units = Units(length_unit or "Ang", energy_unit or "kcal/mol")
    R, E, F = convert_to_internal(np.stack(positions), np.array(energies), np.stack(forces), units)
    return MolecularDataset(
        R=R,
        z=frames[0].numbers,
        E=E,
        F=F,
        name=path.stem,
        theory=str(frames[0].info.get("theory", "unknown")),
        source=str(path),
        source_units=units,
    )
