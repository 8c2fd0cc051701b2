"""The two molecules of the study and their donor / acceptor atoms.

* ``push_pull``: (E)-N,N-dimethyl-4-(4-nitrostyryl)aniline, C16H16N2O2 (36 atoms), a conjugated
  donor–π-bridge–acceptor ("push–pull") stilbene.
* ``saturated``: N,N-dimethyl-4-[2-(4-nitrophenyl)ethyl]aniline, C16H18N2O2 (38 atoms), the same
  donor and acceptor joined by a -CH2-CH2- bridge, which breaks the conjugation between the rings.

Atom order is RDKit's for ``AddHs(MolFromSmiles(smiles))`` (heavy atoms in SMILES order, then the
hydrogens), which is the order ``geopatra label --smiles`` writes; :func:`check_atom_order` verifies it
on a labelled file (elements and bond graph from the geometry).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMILES = {
    "push_pull": "CN(C)c1ccc(/C=C/c2ccc(cc2)[N+](=O)[O-])cc1",
    "saturated": "CN(C)c1ccc(CCc2ccc(cc2)[N+](=O)[O-])cc1",
}
TITLES = {
    "push_pull": "push–pull stilbene (conjugated C=C bridge)",
    "saturated": "saturated control (CH2–CH2 bridge)",
}
#: SMARTS of the donor (N(CH3)2 on an aromatic C) and acceptor (NO2) heavy atoms.
DONOR_SMARTS = "[CH3][NX3]([CH3])c"
ACCEPTOR_SMARTS = "[N+](=O)[O-]"
#: Covalent radii [Å] for the bond check (H, C, N, O).
_COVALENT = {1: 0.31, 6: 0.76, 7: 0.71, 8: 0.66}


@dataclass(frozen=True)
class Groups:
    """Atom indices (dataset order) of one molecule's functional groups.

    Attributes:
        donor: N(CH3)2: N, the two methyl C and their six H (9 atoms).
        acceptor: NO2: N and both O (3 atoms).
        bonds: bonded atom pairs [n_bonds, 2] of the RDKit graph (with hydrogens).
        labels: per-atom labels such as "N1", "O17" (element + index), for plots.
        z: atomic numbers [N].
    """

    donor: np.ndarray
    acceptor: np.ndarray
    bonds: np.ndarray
    labels: list[str]
    z: np.ndarray


def rdkit_mol(name: str):
    """The RDKit molecule with explicit hydrogens, in dataset atom order."""
    from rdkit import Chem

    return Chem.AddHs(Chem.MolFromSmiles(SMILES[name]))


def groups(name: str) -> Groups:
    """Donor and acceptor atoms of molecule ``name`` (``push_pull`` or ``saturated``)."""
    from rdkit import Chem

    mol = rdkit_mol(name)
    donor_matches = mol.GetSubstructMatches(Chem.MolFromSmarts(DONOR_SMARTS))
    acceptor_matches = mol.GetSubstructMatches(Chem.MolFromSmarts(ACCEPTOR_SMARTS))
    if len(donor_matches) != 1 or len(acceptor_matches) != 1:
        raise ValueError(f"{name}: expected one donor and one acceptor match, got {donor_matches}, {acceptor_matches}")
    heavy_donor = donor_matches[0][:3]  # CH3, N, CH3 (the aromatic C is not part of the group)
    donor = set(heavy_donor)
    for index in heavy_donor:
        donor.update(n.GetIdx() for n in mol.GetAtomWithIdx(index).GetNeighbors() if n.GetAtomicNum() == 1)
    bonds = np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()], dtype=np.int64)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    labels = [f"{a.GetSymbol()}{a.GetIdx()}" for a in mol.GetAtoms()]
    return Groups(np.array(sorted(donor)), np.array(sorted(acceptor_matches[0])), bonds, labels, z)


def bonds_from_geometry(pos: np.ndarray, z: np.ndarray, scale: float = 1.25) -> set[tuple[int, int]]:
    """Pairs (i < j) closer than ``scale`` x the sum of covalent radii; pos [N, 3] Å."""
    radii = np.array([_COVALENT[int(e)] for e in z])
    distance = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    i, j = np.nonzero(np.triu(distance < scale * (radii[:, None] + radii[None]), k=1))
    return set(zip(i.tolist(), j.tolist()))


def check_atom_order(name: str, z: np.ndarray, pos: np.ndarray) -> Groups:
    """Raise ValueError unless a labelled frame (z [N], pos [N, 3] Å) has RDKit's elements and bond
    graph in RDKit's atom order; returns the molecule's :class:`Groups`."""
    g = groups(name)
    if not np.array_equal(np.asarray(z), g.z):
        raise ValueError(f"{name}: dataset elements {list(z)} differ from RDKit's {list(g.z)}")
    expected = {tuple(sorted(map(int, b))) for b in g.bonds}
    found = bonds_from_geometry(np.asarray(pos), g.z)
    if found != expected:
        raise ValueError(
            f"{name}: bond graph of the labelled geometry differs from RDKit's: "
            f"missing {sorted(expected - found)}, extra {sorted(found - expected)}"
        )
    return g


def depiction(name: str) -> np.ndarray:
    """2D coordinates [N, 2] (RDKit depiction, hydrogens included) for drawings, in dataset order,
    rotated so that the donor N lies on the left and the acceptor N on the right."""
    from rdkit.Chem import rdDepictor

    mol = rdkit_mol(name)
    rdDepictor.SetPreferCoordGen(False)
    rdDepictor.Compute2DCoords(mol)
    xy = np.asarray(mol.GetConformer().GetPositions())[:, :2]
    g = groups(name)
    donor_n = next(i for i in g.donor if g.z[i] == 7)
    acceptor_n = next(i for i in g.acceptor if g.z[i] == 7)
    axis = xy[acceptor_n] - xy[donor_n]
    angle = -np.arctan2(axis[1], axis[0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (xy - xy[donor_n]) @ rotation.T
