"""The Lightning data module: reads one or several molecules, splits each reproducibly, serves
torch-geometric batches.

Batches carry ``pos`` [n_atoms, 3] Å, ``z`` [n_atoms], ``energy`` [n_mol] kcal/mol, ``forces``
[n_atoms, 3] kcal/mol/Å, ``batch`` [n_atoms], ``frame`` [n_mol] (index into the molecule's dataset)
and ``molecule`` [n_mol] (which of the data module's molecules), all float64: the task casts to the
model's dtype, so the kernel model keeps full precision. A batch may mix molecules of different sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from geopatra.data.dataset import MolecularDataset
from geopatra.data.io import BUNDLED, read_molecules
from geopatra.data.splits import Split, check_splits, load_splits, make_split, save_splits
from geopatra.errors import DataError, SplitError

logger = logging.getLogger(__name__)

SPLIT_FILE_NAME = "split.npz"


class EpochShuffleSampler(Sampler[int]):
    """Shuffles with a permutation that depends on (seed, epoch) only, so a resumed run sees the same
    frame order in each epoch as an uninterrupted one (Lightning calls ``set_epoch``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


def to_graphs(dataset: MolecularDataset, molecule: int = 0) -> list[Data]:
    """One torch-geometric ``Data`` per frame (float64 tensors), tagged with ``molecule``."""
    z = torch.as_tensor(np.array(dataset.z), dtype=torch.long)
    R = torch.as_tensor(np.array(dataset.R))
    F = torch.as_tensor(np.array(dataset.F))
    E = torch.as_tensor(np.array(dataset.E))
    frames = torch.as_tensor(np.array(dataset.indices))
    tag = torch.tensor([molecule])
    return [
        Data(pos=R[i], z=z, energy=E[i : i + 1], forces=F[i], frame=frames[i : i + 1], molecule=tag)
        for i in range(dataset.n_frames)
    ]


def per_molecule(value: int | Sequence[int | None] | None, n_molecules: int, name: str) -> list[int | None]:
    """A frame count given once for every molecule, or one per molecule, as a list of ``n_molecules``."""
    if value is None or isinstance(value, int):
        return [value] * n_molecules
    values = list(value)
    if len(values) != n_molecules:
        raise DataError(f"{name} lists {len(values)} counts for {n_molecules} molecule(s); give one per molecule")
    return values


class MolecularDataModule(L.LightningDataModule):
    """Train/validation/test batches of one molecule's frames, or of several molecules' frames.

    Args:
        path: npz or extxyz file, an MD22 molecule name (downloaded and cached), or ``"bundled"``
            (Ac-Ala3-NHMe, GFN2-xTB, shipped with geopatra); or a list of them. Every composition
            in the files (an extxyz file may hold several) is one molecule with its own split.
        n_train, n_val: frames for training and validation, per molecule (one count for every
            molecule, or a list with one per molecule).
        n_test: frames for testing per molecule; ``None`` takes every remaining frame (as the MD22
            paper does).
        seed: seed of the split.
        batch_size: molecules per training batch.
        eval_batch_size: molecules per validation/test batch (default: ``batch_size``).
        split_file: an existing ``split.npz`` to reuse. Without it, ``<run dir>/split.npz`` is reused
            when it exists and belongs to these datasets, so fit, validate and test see the same frames.
        length_unit, energy_unit: override the files' units (npz ``r_unit``/``e_unit``, else Å and
            kcal/mol; extxyz: Å and the unit of the energy key's dialect, see ``geopatra.data.extxyz``).
        energy_key, forces_key: extxyz keys (default ``REF_energy``/``energy``/``Energy`` and
            ``REF_forces``/``forces``).
    """

    def __init__(
        self,
        path: str | list[str] = BUNDLED,
        n_train: int | list[int] = 1000,
        n_val: int | list[int] = 100,
        n_test: int | list[int | None] | None = None,
        seed: int = 0,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        split_file: str | None = None,
        length_unit: str | None = None,
        energy_unit: str | None = None,
        energy_key: str | None = None,
        forces_key: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.path = path
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.seed = seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.split_file = split_file
        self.read_options = {
            "length_unit": length_unit,
            "energy_unit": energy_unit,
            "energy_key": energy_key,
            "forces_key": forces_key,
        }
        self.num_workers = num_workers
        self.datasets: list[MolecularDataset] = []
        self.splits: list[Split] = []

    # ----------------------------------------------------------------------------------------------
    def run_dir(self) -> Path | None:
        trainer = self.trainer
        return Path(trainer.default_root_dir) if trainer is not None else None

    def load(self) -> None:
        """Read the datasets and fix their splits (idempotent)."""
        if self.datasets:
            return
        datasets = read_molecules(self.path, **self.read_options)
        split_file = self.split_file
        run_dir = self.run_dir()
        if split_file is None and run_dir is not None and (run_dir / SPLIT_FILE_NAME).is_file():
            existing = [s.fingerprint for s in load_splits(run_dir / SPLIT_FILE_NAME)]
            if existing == [d.fingerprint for d in datasets]:
                split_file = str(run_dir / SPLIT_FILE_NAME)
                logger.info("reusing the split of this run directory: %s", split_file)
        if split_file is None:
            counts = zip(*(per_molecule(v, len(datasets), name) for v, name in
                           ((self.n_train, "n_train"), (self.n_val, "n_val"), (self.n_test, "n_test"))))
            splits = [make_split(d, n_train, n_val, n_test, self.seed)
                      for d, (n_train, n_val, n_test) in zip(datasets, counts)]
            check_splits(splits, datasets)
        else:
            splits = load_splits(split_file)
            try:
                check_splits(splits, datasets)
            except DataError as err:
                raise SplitError(f"{split_file}: {err}") from err
        self.datasets, self.splits = datasets, splits
        if run_dir is not None and self.trainer.is_global_zero:  # every process draws the same split
            save_splits(run_dir / SPLIT_FILE_NAME, splits)
        for dataset, split in zip(datasets, splits):
            logger.info("%s: %d train / %d val / %d test frames",
                        dataset.name, len(split.train), len(split.val), len(split.test))

    def setup(self, stage: str | None = None) -> None:
        self.load()

    @property
    def dataset(self) -> MolecularDataset:
        """The dataset of a one-molecule data module (see :attr:`datasets` for several)."""
        self.load()
        return self._only(self.datasets)

    @property
    def split(self) -> Split:
        """The split of a one-molecule data module (see :attr:`splits` for several)."""
        self.load()
        return self._only(self.splits)

    def _only(self, items: list):
        if len(items) != 1:
            raise DataError(
                f"this data module holds {len(items)} molecules ({', '.join(self.molecule_names)}); "
                "use its per-molecule lists (datasets, splits, subsets)"
            )
        return items[0]

    @property
    def molecule_names(self) -> list[str]:
        """One unique name per molecule, in order (the dataset name, made unique with its index)."""
        names = [d.name or f"molecule{k}" for k, d in enumerate(self.datasets)]
        return [n if names.count(n) == 1 else f"{n}_{k}" for k, n in enumerate(names)]

    def subsets(self, which: str) -> list[MolecularDataset]:
        """The ``train``, ``val`` or ``test`` frames of each molecule, in order."""
        self.load()
        return [d.subset(getattr(s, which)) for d, s in zip(self.datasets, self.splits)]

    def subset(self, which: str) -> MolecularDataset:
        """The ``train``, ``val`` or ``test`` frames of a one-molecule data module."""
        return self._only(self.subsets(which))

    @property
    def train_set(self) -> MolecularDataset:
        return self.subset("train")

    @property
    def val_set(self) -> MolecularDataset:
        return self.subset("val")

    @property
    def test_set(self) -> MolecularDataset:
        return self.subset("test")

    def _loader(self, which: str, shuffle: bool) -> DataLoader:
        size = self.batch_size if which == "train" else self.eval_batch_size
        graphs = [g for k, subset in enumerate(self.subsets(which)) for g in to_graphs(subset, k)]
        return DataLoader(
            graphs,
            batch_size=size,
            sampler=EpochShuffleSampler(len(graphs), self.seed) if shuffle else None,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
