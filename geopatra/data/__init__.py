"""Datasets: readers (one molecule each; several per extxyz file or list of files), validation, splits
and the Lightning data module."""

from geopatra.data.dataset import MolecularDataset, fingerprint_arrays
from geopatra.data.extxyz import read_extxyz
from geopatra.data.io import read_dataset, read_molecules, resolve_path
from geopatra.data.npz import read_npz, write_npz
from geopatra.data.splits import Split, check_split, make_split

__all__ = [
    "MolecularDataset",
    "Split",
    "check_split",
    "fingerprint_arrays",
    "make_split",
    "read_dataset",
    "read_extxyz",
    "read_molecules",
    "read_npz",
    "resolve_path",
    "write_npz",
]
