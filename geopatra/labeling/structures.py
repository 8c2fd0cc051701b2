"""Starting geometries for labelling: SMILES -> 3D (RDKit ETKDG + MMFF) or a structure file (ASE).

RDKit is part of the optional ``label`` extra and is imported only when a SMILES string is used.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase import Atoms

from geopatra.errors import DataError

logger = logging.getLogger(__name__)

#: Message for a missing optional dependency of ``geopatra label``.
LABEL_EXTRA_HINT = 'install the labelling extra: pip install "geopatra[label]"'


def import_optional(module: str):
    """Import ``module`` (rdkit, tblite, ...) or raise ImportError naming the ``label`` extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"geopatra label needs the optional package {module.split('.')[0]!r}; "
            f"{LABEL_EXTRA_HINT}"
        ) from exc


def atoms_from_smiles(smiles: str, *, seed: int = 0, mmff_iterations: int = 2000) -> Atoms:
    """3D structure of ``smiles`` with explicit hydrogens: ETKDGv3 embedding (seeded), MMFF relax.

    Args:
        smiles: SMILES string of one molecule (stereo centres are kept). Its net formal charge and
            spin multiplicity (1 + unpaired electrons) go to ``atoms.info["charge"]`` and
            ``atoms.info["multiplicity"]``, for the reference calculator.
        seed: random seed of the embedding; the same seed gives the same geometry.
        mmff_iterations: maximum MMFF optimisation steps.

    Returns:
        ASE ``Atoms``, positions in Å, no cell, no periodicity.

    Raises:
        DataError: the SMILES does not parse or cannot be embedded in 3D.
    """
    chem = import_optional("rdkit.Chem")
    all_chem = import_optional("rdkit.Chem.AllChem")
    mol = chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"SMILES {smiles!r} could not be parsed by RDKit; check the string.")
    mol = chem.AddHs(mol)
    params = all_chem.ETKDGv3()
    params.randomSeed = int(seed)
    if all_chem.EmbedMolecule(mol, params) != 0:
        raise DataError(
            f"RDKit could not embed {smiles!r} in 3D (ETKDG, seed {seed}); try another --seed "
            "or start from --xyz."
        )
    if all_chem.MMFFHasAllMoleculeParams(mol):
        status = all_chem.MMFFOptimizeMolecule(mol, maxIters=mmff_iterations)
        if status != 0:
            logger.warning(
                "MMFF relaxation of %s did not converge in %d steps", smiles, mmff_iterations
            )
    else:
        logger.warning("MMFF has no parameters for %s; using the ETKDG geometry unrelaxed", smiles)
    numbers = [atom.GetAtomicNum() for atom in mol.GetAtoms()]
    positions = np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)
    descriptors = import_optional("rdkit.Chem.Descriptors")
    info = {
        "charge": int(chem.GetFormalCharge(mol)),
        "multiplicity": 1 + int(descriptors.NumRadicalElectrons(mol)),
    }
    return Atoms(numbers=numbers, positions=positions, info=info)


def atoms_from_file(path: str | Path, index: int = 0) -> Atoms:
    """Frame ``index`` of a structure file ASE can read (xyz, extxyz, pdb, ...), positions in Å."""
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: structure file not found.")
    try:
        atoms = read(path, index=index)
    except Exception as exc:  # ASE raises many types for unreadable files
        raise DataError(f"{path}: ASE could not read a structure from it ({exc}).") from exc
    if isinstance(atoms, list):  # pragma: no cover - index is an int
        atoms = atoms[0]
    clean = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    if len(clean) < 2:
        raise DataError(f"{path}: found {len(clean)} atom(s); expected a molecule of at least 2.")
    return clean
