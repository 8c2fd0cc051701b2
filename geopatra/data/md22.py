"""The MD22 benchmark (Chmiela et al., Sci. Adv. 2023) by name: registry and cached download.

The files are the sGDML npz datasets (Å, kcal/mol; keys R, z, E, F, md5, ...) served by the sGDML
repository. :func:`resolve_md22` downloads a molecule once into the cache (``$GEOPATRA_CACHE``,
default ``~/.cache/geopatra``, sub-folder ``md22``), verifies it, and returns its path.

>>> md22_entry("ac-ala3-nhme").n_atoms
42
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from geopatra.data.download import cache_dir as default_cache_dir
from geopatra.data.download import download
from geopatra.errors import DataError

#: Where the sGDML project serves the MD22 npz files.
MD22_BASE_URL = "http://www.quantum-machine.org/gdml/repo/datasets/"


@dataclass(frozen=True)
class MD22Entry:
    """One MD22 molecule.

    Attributes:
        name: canonical name, e.g. ``"Ac-Ala3-NHMe"``.
        filename: file name on the server and in the cache, e.g. ``"md22_Ac-Ala3-NHMe.npz"``.
        n_atoms: atoms per frame.
        n_train: training-set size used in the MD22 paper.
        sha256: pinned sha256 of the file, or None (then the hash recorded at first download is
            checked on later use).
        aliases: other accepted names (lower case).
    """

    name: str
    filename: str
    n_atoms: int
    n_train: int
    sha256: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """Download URL (``MD22_BASE_URL`` + file name, read at call time)."""
        return MD22_BASE_URL + self.filename


def _entries(*entries: MD22Entry) -> MappingProxyType:
    return MappingProxyType({entry.name: entry for entry in entries})


#: The seven MD22 molecules, by canonical name (read-only).
MD22 = _entries(
    MD22Entry("Ac-Ala3-NHMe", "md22_Ac-Ala3-NHMe.npz", 42, 6000, aliases=("tetrapeptide",)),
    MD22Entry("DHA", "md22_DHA.npz", 56, 8000, aliases=("docosahexaenoic-acid",)),
    MD22Entry("stachyose", "md22_stachyose.npz", 87, 8000),
    MD22Entry("AT-AT", "md22_AT-AT.npz", 60, 3000),
    MD22Entry("AT-AT-CG-CG", "md22_AT-AT-CG-CG.npz", 118, 2000),
    MD22Entry("buckyball-catcher", "md22_buckyball-catcher.npz", 148, 600, aliases=("buckyball",)),
    MD22Entry(
        "double-walled-nanotube",
        "md22_double-walled_nanotube.npz",
        370,
        800,
        aliases=("nanotube", "dw-nanotube"),
    ),
)

#: Canonical names, in the order of the paper.
MD22_MOLECULES: tuple[str, ...] = tuple(MD22)


def _key(text: str) -> str:
    text = text.strip().lower()
    text = re.sub(r"\.npz$", "", text)
    text = re.sub(r"^md22[_-]", "", text)
    return re.sub(r"[\s_]+", "-", text)


def md22_entry(name: str) -> MD22Entry:
    """The registry entry for ``name``: case-insensitive; ``_``/space/``-`` alike; ``md22_`` prefix,
    ``.npz`` suffix and a few aliases accepted.

    Raises:
        DataError: unknown name (the message lists the known ones).
    """
    wanted = _key(name)
    for entry in MD22.values():
        keys = {_key(entry.name), _key(entry.filename), *(_key(alias) for alias in entry.aliases)}
        if wanted in keys:
            return entry
    raise DataError(
        f"{name!r} is not an MD22 molecule; known: {', '.join(MD22)} (case-insensitive)."
    )


def _check_molecule(
    entry: MD22Entry, validate: Callable[[Path], object] | None
) -> Callable[[Path], None]:
    """A validator: the caller's ``validate``, then the atom count against the registry."""

    def check(path: Path) -> None:
        if validate is not None:
            validate(path)
        with np.load(path, allow_pickle=False) as data:
            if "z" not in data.files:
                raise DataError(f"{path}: no 'z' key; not an sGDML/MD22 dataset.")
            n_atoms = int(np.asarray(data["z"]).shape[-1])
        if n_atoms != entry.n_atoms:
            raise DataError(
                f"{path}: {n_atoms} atoms per frame; MD22 {entry.name} has {entry.n_atoms}."
            )

    return check


def _default_validate(path: Path) -> None:
    from geopatra.data.npz import read_npz  # local: the reader imports much of geopatra.data

    read_npz(path)


def resolve_md22(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    validate: Callable[[Path], object] | None = _default_validate,
    progress: bool = True,
    retries: int = 3,
) -> Path:
    """Path of the verified cached MD22 file for ``name``, downloading it if needed.

    Args:
        name: molecule name (see :func:`md22_entry`).
        cache_dir: cache root (default ``$GEOPATRA_CACHE`` or ``~/.cache/geopatra``); the file goes
            to ``<cache_dir>/md22/<filename>``.
        validate: extra check of the file's content raising :class:`DataError` (default: the npz
            reader); the atom count is always checked against the registry.
        progress: show a download progress bar.
        retries: extra download attempts after the first.

    Raises:
        DataError: unknown molecule name.
        DownloadError: no verified file could be obtained.
    """
    entry = md22_entry(name)
    dest = default_cache_dir(cache_dir) / "md22" / entry.filename
    return download(
        entry.url,
        dest,
        sha256=entry.sha256,
        validate=_check_molecule(entry, validate),
        progress=progress,
        retries=retries,
    )
