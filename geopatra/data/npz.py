"""Reader and writer for sGDML/MD17/MD22-style npz files.

Keys: ``R`` [n, N, 3], ``z`` [N], ``E`` [n] or [n, 1], ``F`` [n, N, 3]; optional ``r_unit``, ``e_unit``,
``name``, ``theory``, ``md5`` and any scalar metadata. Files without unit keys follow the sGDML
convention (Å, kcal/mol).
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from geopatra.data.dataset import MolecularDataset
from geopatra.errors import DataError, MissingKeyError
from geopatra.units import SGDML_UNITS, Units

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("R", "z", "E", "F")
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _scalar_string(value: np.ndarray) -> str:
    item = value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value
    return item.decode() if isinstance(item, bytes) else str(item)


def file_units(
    path: str | os.PathLike,
    found_length: str | None,
    found_energy: str | None,
    length_unit: str | None,
    energy_unit: str | None,
) -> Units:
    """Units of a file: explicit overrides win, then the file's keys, then the sGDML convention (logged)."""
    length = length_unit or found_length
    energy = energy_unit or found_energy
    if length is None or energy is None:
        logger.info(
            "%s carries no %s; assuming the sGDML convention (Å, kcal/mol). Pass length_unit/energy_unit "
            "(--data.length_unit, --data.energy_unit) if that is wrong.",
            path,
            " and ".join(k for k, v in (("r_unit", length), ("e_unit", energy)) if v is None),
        )
    return Units(length or SGDML_UNITS.length, energy or SGDML_UNITS.energy)


def convert_to_internal(
    R: np.ndarray, E: np.ndarray, F: np.ndarray, units: Units
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert positions, energies and forces from ``units`` to Å, kcal/mol, kcal/mol/Å."""
    if units == SGDML_UNITS:
        return R, E, F
    return (
        np.asarray(R, dtype=np.float64) * units.length_factor_to(SGDML_UNITS),
        np.asarray(E, dtype=np.float64) * units.energy_factor_to(SGDML_UNITS),
        np.asarray(F, dtype=np.float64) * units.force_factor_to(SGDML_UNITS),
    )


def read_npz(
    path: str | os.PathLike,
    *,
    length_unit: str | None = None,
    energy_unit: str | None = None,
) -> MolecularDataset:
    """Read an sGDML-style npz file into a validated :class:`MolecularDataset` (Å, kcal/mol).

    ``length_unit``/``energy_unit`` override the file's ``r_unit``/``e_unit`` keys.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable npz file ({err}); re-download or re-create it") from err
    missing = [key for key in REQUIRED_KEYS if key not in contents]
    if missing:
        raise MissingKeyError(
            f"{path}: missing key(s) {missing}; an sGDML/MD22 npz needs R [n, N, 3] (positions), "
            f"z [N] (atomic numbers), E [n] (energies) and F [n, N, 3] (forces). Found {sorted(contents)}."
        )
    found_length = _scalar_string(contents["r_unit"]) if "r_unit" in contents else None
    found_energy = _scalar_string(contents["e_unit"]) if "e_unit" in contents else None
    units = file_units(path, found_length, found_energy, length_unit, energy_unit)
    R, E, F = convert_to_internal(contents["R"], contents["E"], contents["F"], units)
    metadata = {
        key: _scalar_string(value)
        for key, value in contents.items()
        if key not in REQUIRED_KEYS and key not in ("name", "theory") and value.ndim == 0
    }
    return MolecularDataset(
        R=R,
        z=contents["z"],
        E=E,
        F=F,
        name=_scalar_string(contents["name"]) if "name" in contents else path.stem,
        theory=_scalar_string(contents["theory"]) if "theory" in contents else "unknown",
        source=str(path),
        source_units=units,
        metadata=metadata,
    )


def write_npz_atomic(path: str | Path, arrays: dict[str, Any], *, compress: bool = True) -> Path:
    """Write ``arrays`` to ``path`` as an npz (zip of .npy members), atomically and reproducibly.

    Members are written in the order of ``arrays`` with a fixed timestamp, so equal arrays give
    byte-identical files. ``path`` is used as given (no ``.npz`` is appended).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, mode="w", compression=method, allowZip64=True) as archive:
                for key, value in arrays.items():
                    info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                    info.compress_type = method
                    info.external_attr = 0o644 << 16
                    with archive.open(info, mode="w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; a dataset is meant to be shared
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path



def write_npz(dataset: MolecularDataset, path: str | os.PathLike, **extra: str | float) -> Path:
    """Write ``dataset`` as an sGDML-style npz (Å, kcal/mol, with unit keys), atomically and
    byte-reproducibly. ``extra`` scalars (e.g. ``temperature=500``) are stored as additional keys."""
    scalars = {**dataset.metadata, **extra}
    for key in ("r_unit", "e_unit", "name", "theory", "sha256"):
        scalars.pop(key, None)
    arrays = {
        "R": dataset.R,
        "z": dataset.z,
        "E": dataset.E,
        "F": dataset.F,
        "r_unit": np.array(SGDML_UNITS.length),
        "e_unit": np.array(SGDML_UNITS.energy),
        "name": np.array(dataset.name),
        "theory": np.array(dataset.theory),
        "sha256": np.array(dataset.fingerprint),
        **{key: np.array(value) for key, value in scalars.items()},
    }
    return write_npz_atomic(path, arrays)
