"""Datasets shipped with geopatra (package data).

``ac_ala3_nhme_gfn2xtb.npz``: Ac-Ala3-NHMe (42 atoms, the smallest MD22 molecule) sampled by
Langevin MD at 500 K and labelled with GFN2-xTB; made by ``geopatra label`` with the command
recorded in this folder's README.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from geopatra.errors import DataError

#: File name of the bundled default dataset.
BUNDLED_FILE = "ac_ala3_nhme_gfn2xtb.npz"


def bundled_path() -> Path:
    """Path of the bundled Ac-Ala3-NHMe GFN2-xTB dataset (npz: R [n,42,3] Å, z, E kcal/mol, F).

    Raises:
        DataError: the file is missing from the installation.
    """
    path = Path(str(resources.files(__name__).joinpath(BUNDLED_FILE)))
    if not path.is_file():
        raise DataError(
            f"{path}: the bundled dataset is missing from this installation; reinstall geopatra, "
            "or regenerate it with the command in geopatra/data/bundled/README.md."
        )
    return path


__all__ = ["BUNDLED_FILE", "bundled_path"]
