"""The Lightning data module: reads a dataset, splits it reproducibly, serves torch-geometric batches.

Batches carry ``pos`` [n_atoms, 3] Å, ``z`` [n_atoms], ``energy`` [n_mol] kcal/mol, ``forces``
[n_atoms, 3] kcal/mol/Å, ``batch`` [n_atoms] and ``frame`` [n_mol] (index into the source file), all
float64: the task casts to the model's dtype, so the kernel model keeps full precision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import Sampler
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from geopatra.data.dataset import MolecularDataset
from geopatra.data.io import BUNDLED, read_dataset
from geopatra.data.splits import Split, check_split, load_or_make_split

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


def to_graphs(dataset: MolecularDataset) -> list[Data]:
    """One torch-geometric ``Data`` per frame (float64 tensors)."""
    z = torch.as_tensor(np.array(dataset.z), dtype=torch.long)
    R = torch.as_tensor(np.array(dataset.R))
    F = torch.as_tensor(np.array(dataset.F))
    E = torch.as_tensor(np.array(dataset.E))
    frames = torch.as_tensor(np.array(dataset.indices))
    return [
        Data(pos=R[i], z=z, energy=E[i : i + 1], forces=F[i], frame=frames[i : i + 1])
        for i in range(dataset.n_frames)
    ]


class MolecularDataModule(L.LightningDataModule):
    """Train/validation/test batches of one molecule's frames.

    Args:
        path: npz or extxyz file, an MD22 molecule name (downloaded and cached), or ``"bundled"``
            (Ac-Ala3-NHMe, GFN2-xTB, shipped with geopatra).
        n_train, n_val: frames for training and validation.
        n_test: frames for testing; ``None`` takes every remaining frame (as the MD22 paper does).
        seed: seed of the split.
        batch_size: molecules per training batch.
        eval_batch_size: molecules per validation/test batch (default: ``batch_size``).
        split_file: an existing ``split.npz`` to reuse. Without it, ``<run dir>/split.npz`` is reused
            when it exists and belongs to this dataset, so fit, validate and test see the same frames.
        length_unit, energy_unit: override the file's units (npz ``r_unit``/``e_unit``, else Å and
            kcal/mol; extxyz: Å and the unit of the energy key's dialect, see ``geopatra.data.extxyz``).
        energy_key, forces_key: extxyz keys (default ``REF_energy``/``energy``/``Energy`` and
            ``REF_forces``/``forces``).
    """

    def __init__(
        self,
        path: str = BUNDLED,
        n_train: int = 1000,
        n_val: int = 100,
        n_test: int | None = None,
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
        self.dataset: MolecularDataset | None = None
        self.split: Split | None = None

    # ----------------------------------------------------------------------------------------------
    def run_dir(self) -> Path | None:
        trainer = self.trainer
        return Path(trainer.default_root_dir) if trainer is not None else None

    def load(self) -> None:
        """Read the dataset and fix the split (idempotent)."""
        if self.dataset is not None:
            return
        self.dataset = read_dataset(self.path, **self.read_options)
        split_file = self.split_file
        run_dir = self.run_dir()
        if split_file is None and run_dir is not None and (run_dir / SPLIT_FILE_NAME).is_file():
            existing = Split.load(run_dir / SPLIT_FILE_NAME)
            if existing.fingerprint == self.dataset.fingerprint:
                split_file = str(run_dir / SPLIT_FILE_NAME)
                logger.info("reusing the split of this run directory: %s", split_file)
        self.split = load_or_make_split(
            self.dataset, self.n_train, self.n_val, self.n_test, self.seed, split_file
        )
        check_split(self.split, self.dataset)
        if run_dir is not None:
            self.split.save(run_dir / SPLIT_FILE_NAME)
        logger.info(
            "%s: %d train / %d val / %d test frames",
            self.dataset.name,
            len(self.split.train),
            len(self.split.val),
            len(self.split.test),
        )

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def subset(self, which: str) -> MolecularDataset:
        """The ``train``, ``val`` or ``test`` frames as a :class:`MolecularDataset`."""
        self.load()
        return self.dataset.subset(getattr(self.split, which))

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
        graphs = to_graphs(self.subset(which))
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
