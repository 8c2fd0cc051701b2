"""Reader for extended-XYZ trajectories (through ``ase.io``) with energies and forces.

Keys: the energy is looked up in ``atoms.info`` (or the values ASE moved into its single-point
calculator) under ``energy_key``, by default the first of ``REF_energy`` (MACE), ``energy`` (ASE) and
``Energy`` (MD22, sGDML's xyz export); forces under ``forces_key``, by default ``REF_forces`` then
``forces``.

Units, unless given (``length_unit``, ``energy_unit``), follow the dialect of the energy key, so that
a file written by ASE or for MACE reads as its authors meant it:

- ``REF_energy`` and ``energy``: ASE's units, eV and eV/Å (what ``ase.io.write`` stores for any ASE
  calculator, and what MACE trains on);
- ``Energy``: the sGDML convention, kcal/mol and kcal/mol/Å (MD22 and sGDML's own xyz exports).

Positions are in Å in both. A kcal/mol file that uses ASE's ``energy`` key (e.g. a converted rMD17
trajectory) needs ``energy_unit="kcal/mol"`` (``--data.energy_unit kcal/mol``); the units assumed are
stored with the dataset, shown by ``geopatra summary`` and logged when a run reads the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from geopatra.data.dataset import MolecularDataset
from geopatra.data.npz import convert_to_internal
from geopatra.errors import DataError, MissingKeyError, ShapeError
from geopatra.units import Units

logger = logging.getLogger(__name__)

DEFAULT_ENERGY_KEYS = ("REF_energy", "energy", "Energy")
DEFAULT_FORCES_KEYS = ("REF_forces", "forces")
#: Energy unit a file means when it names its energy with this key (see the module docstring).
ENERGY_UNIT_OF_KEY = {"REF_energy": "eV", "energy": "eV", "Energy": "kcal/mol"}


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
    forces_key: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
) -> MolecularDataset:
    """Read an extxyz trajectory of one molecule into a validated :class:`MolecularDataset` (Å, kcal/mol).

    Args:
        energy_key: key of the per-frame energy; ``None`` tries ``REF_energy``, ``energy``, ``Energy``.
        forces_key: name of the per-atom force column; ``None`` tries ``REF_forces``, ``forces``.
        length_unit, energy_unit: units of the file; by default Å and the unit of the energy key's
            dialect (eV for ``REF_energy``/``energy``, kcal/mol for ``Energy``; see the module docstring).

    Raises:
        ShapeError: the file holds several compositions (read it with :func:`read_extxyz_molecules`).
    """
    molecules = _read_compositions(
        path, energy_key=energy_key, forces_key=forces_key, length_unit=length_unit, energy_unit=energy_unit
    )
    if len(molecules) > 1:
        (first, _), (second, frames) = molecules[:2]
        raise ShapeError(
            f"{path}: frame {frames[0]} holds {second.n_atoms} atoms {second.formula}; expected "
            f"{first.n_atoms} atoms {first.formula} in the same order as frame 0. A dataset holds one "
            "molecule; pass the file to --data.path to train one model on all its molecules."
        )
    return molecules[0][0]


def read_extxyz_molecules(
    path: str | os.PathLike,
    *,
    energy_key: str | None = None,
    forces_key: str | None = None,
    length_unit: str | None = None,
    energy_unit: str | None = None,
) -> list[MolecularDataset]:
    """Read an extxyz file that may hold several molecules: one :class:`MolecularDataset` per
    composition (atomic numbers in order), in the order each first appears in the file.

    A file of one molecule gives one dataset named after the file; several give ``<file>_<formula>``
    each (a warning lists them: a frame whose atoms are out of order is a molecule of its own).
    Arguments as :func:`read_extxyz`.
    """
    molecules = _read_compositions(
        path, energy_key=energy_key, forces_key=forces_key, length_unit=length_unit, energy_unit=energy_unit
    )
    if len(molecules) > 1:
        logger.warning("%s holds %d compositions, read as molecules: %s", path, len(molecules),
                       ", ".join(f"{m.name} ({m.n_frames} frames)" for m, _ in molecules))
    return [m for m, _ in molecules]


def _read_compositions(
    path: str | os.PathLike,
    *,
    energy_key: str | None,
    forces_key: str | None,
    length_unit: str | None,
    energy_unit: str | None,
) -> list[tuple[MolecularDataset, list[int]]]:
    """Each composition of the file as a dataset, with the numbers of its frames in the file."""
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
    force_keys = (forces_key,) if forces_key else DEFAULT_FORCES_KEYS
    groups: dict[tuple[int, ...], list[int]] = {}
    energies, forces = [], []
    used_energy_key = None
    for index, atoms in enumerate(frames):
        groups.setdefault(tuple(int(z) for z in atoms.numbers), []).append(index)
        key = next((k for k in keys if _frame_value(atoms, k) is not None), None)
        if key is None:
            raise MissingKeyError(
                f"{path}: frame {index} has no energy under {list(keys)}; found info keys "
                f"{sorted(atoms.info)}. Pass energy_key (--data.energy_key) naming the right one."
            )
        if used_energy_key is not None and key != used_energy_key:
            raise DataError(
                f"{path}: frame {index} holds its energy under {key!r}, frame 0 under {used_energy_key!r}; "
                "pass --data.energy_key to choose one"
            )
        used_energy_key, energy = key, _frame_value(atoms, key)
        force = next((v for v in (_frame_value(atoms, k) for k in force_keys) if v is not None), None)
        if force is None:
            raise MissingKeyError(
                f"{path}: frame {index} has no per-atom force column under {list(force_keys)}; found "
                f"{sorted(atoms.arrays)}. Pass forces_key (--data.forces_key) naming the force column."
            )
        energies.append(float(np.asarray(energy).reshape(-1)[0]))
        forces.append(np.asarray(force, dtype=np.float64))
    assumed = energy_unit is None
    energy_unit = energy_unit or ENERGY_UNIT_OF_KEY.get(used_energy_key, "kcal/mol")
    units = Units(length_unit or "Ang", energy_unit)
    if assumed:
        logger.info(
            "%s: energies under %r read as %s (forces %s/Å), the unit of that key's dialect; "
            "pass --data.energy_unit if the file means another", path.name, used_energy_key, energy_unit, energy_unit,
        )
    molecules: list[tuple[MolecularDataset, list[int]]] = []
    names: set[str] = set()
    for numbers, members in groups.items():
        R, E, F = convert_to_internal(
            np.stack([frames[i].get_positions() for i in members]),
            np.array([energies[i] for i in members]),
            np.stack([forces[i] for i in members]),
            units,
        )
        formula = frames[members[0]].get_chemical_formula()
        name = path.stem if len(groups) == 1 else f"{path.stem}_{formula}"
        name = name if name not in names else f"{name}_{len(molecules)}"  # same formula, other atom order
        names.add(name)
        dataset = MolecularDataset(
            R=R,
            z=np.array(numbers),
            E=E,
            F=F,
            name=name,
            theory=str(frames[members[0]].info.get("theory", "unknown")),
            source=str(path),
            source_units=units,
        )
        molecules.append((dataset, members))
    return molecules
