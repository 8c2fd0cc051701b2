"""One entry point for reading datasets: from a path, an MD22 molecule name, or the bundled default;
one molecule (:func:`read_dataset`) or several (:func:`read_molecules`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from geopatra.data.dataset import MolecularDataset
from geopatra.data.extxyz import read_extxyz, read_extxyz_molecules
from geopatra.data.npz import read_npz
from geopatra.errors import DataError, UnitError

#: The name under which the bundled Ac-Ala3-NHMe GFN2-xTB dataset is found.
BUNDLED = "bundled"


def resolve_path(path: str | os.PathLike) -> Path:
    """Turn ``path`` into a file: ``"bundled"``, an MD22 molecule name (downloaded and cached), or a file."""
    text = str(path)
    if text == BUNDLED:
        from geopatra.data.bundled import bundled_path

        return bundled_path()
    candidate = Path(text).expanduser()
    if candidate.exists():
        return candidate
    from geopatra.data.md22 import MD22_MOLECULES, md22_entry, resolve_md22

    try:
        md22_entry(text)
    except DataError:
        raise DataError(
            f"{text}: no such file, and not an MD22 molecule name ({', '.join(MD22_MOLECULES)}) "
            f"nor {BUNDLED!r}"
        ) from None
    return resolve_md22(text)


def read_dataset(
    path: str | os.PathLike,
    *,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> MolecularDataset:
    """Read npz (sGDML/MD22) or extxyz into a :class:`MolecularDataset`; format from the file suffix."""
    file = resolve_path(path)
    suffix = file.suffix.lower()
    if suffix == ".npz":
        if energy_key is not None or forces_key is not None:
            raise DataError(f"{file}: energy_key and forces_key apply to extxyz files only; npz uses 'E' and 'F'")
        return read_npz(file, length_unit=length_unit, energy_unit=energy_unit)
    if suffix in (".xyz", ".extxyz"):
        return read_extxyz(
            file, energy_key=energy_key, forces_key=forces_key, length_unit=length_unit, energy_unit=energy_unit
        )
    raise DataError(f"{file}: unknown format {suffix!r}; expected .npz, .xyz or .extxyz")


def read_molecules(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    length_unit: str | None = None,
    energy_unit: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> list[MolecularDataset]:
    """Every molecule of one or several files (as :func:`read_dataset`; an extxyz file may hold
    several compositions, one dataset each), in the order given.

    Raises:
        UnitError: the files were read in different units (say eV and kcal/mol): a set mixed by
            accident is the likelier story, so convert the files or give ``energy_unit`` for all.
        DataError: no path, or the same molecule (same data) twice.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise DataError("no dataset path given")
    molecules: list[MolecularDataset] = []
    for path in paths:
        file = resolve_path(path)
        if file.suffix.lower() in (".xyz", ".extxyz"):
            molecules += read_extxyz_molecules(
                file, energy_key=energy_key, forces_key=forces_key, length_unit=length_unit, energy_unit=energy_unit
            )
        else:
            molecules.append(
                read_dataset(file, length_unit=length_unit, energy_unit=energy_unit,
                             energy_key=energy_key, forces_key=forces_key)
            )
    first = molecules[0].source_units
    if any(not (math.isclose(m.source_units.length_factor_to(first), 1.0)
                and math.isclose(m.source_units.energy_factor_to(first), 1.0)) for m in molecules):
        found = ", ".join(f"{Path(m.source).name}: {m.source_units.length}, {m.source_units.energy}" for m in molecules)
        raise UnitError(
            f"the datasets were read in different units ({found}); convert them to one, or pass "
            "--data.energy_unit / --data.length_unit if every file means the same units"
        )
    seen: dict[str, str] = {}
    for molecule in molecules:
        if molecule.fingerprint in seen:
            raise DataError(f"{molecule.source}: the same data as {seen[molecule.fingerprint]}; pass each dataset once")
        seen[molecule.fingerprint] = molecule.source
    return molecules
