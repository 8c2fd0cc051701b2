"""One entry point for reading a dataset from a path, an MD22 molecule name, or the bundled default."""

from __future__ import annotations

import os
from pathlib import Path

from geopatra.data.dataset import MolecularDataset
from geopatra.data.extxyz import read_extxyz
from geopatra.data.npz import read_npz
from geopatra.errors import DataError

#: The name under which the bundled Ac-Ala3-NHMe GFN2-xTB dataset is found.
BUNDLED = "bundled"


def resolve_path(path: str | os.PathLike) -> Path:
    """Turn ``path`` into a file: ``"bundled"``, an MD22 molecule name (downloaded and cached), or a file."""
    text = str(path)
    if text == BUNDLED:
        from geopatra.datasets import bundled_path

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
