"""Seeded, disjoint train/validation/test splits, saved as ``split.npz`` with the dataset fingerprint.

A run on several molecules has one :class:`Split` per molecule, all in one ``split.npz``
(:func:`save_splits` / :func:`load_splits`); a one-molecule file keeps the plain layout.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geopatra.data.dataset import MolecularDataset
from geopatra.data.npz import write_npz_atomic
from geopatra.errors import SplitError


@dataclass(frozen=True, eq=False)
class Split:
    """Frame indices into the source file for each subset, and the fingerprint of that file's arrays."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fingerprint: str
    seed: int | None = None

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``split.npz`` atomically (overwriting an identical earlier one is fine)."""
        return write_npz_atomic(path, self._arrays(), compress=False)

    def _arrays(self, suffix: str = "") -> dict[str, np.ndarray]:
        """The npz members of this split, each name followed by ``suffix`` (e.g. ``"_0"``)."""
        return {f"train{suffix}": self.train, f"val{suffix}": self.val, f"test{suffix}": self.test,
                f"fingerprint{suffix}": np.array(self.fingerprint),
                f"seed{suffix}": np.array(-1 if self.seed is None else self.seed)}

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        path = Path(path)
        if not path.is_file():
            raise SplitError(f"{path}: no such split file")
        with np.load(path) as data:
            if "molecules" in data.files:
                raise SplitError(
                    f"{path}: a split of {int(data['molecules'])} molecules; pass all of their datasets"
                )
            missing = [k for k in ("train", "val", "test", "fingerprint") if k not in data.files]
            if missing:
                raise SplitError(f"{path}: missing {missing}; not a geopatra split file")
            seed = int(data["seed"]) if "seed" in data.files else -1
            return cls(
                train=data["train"].astype(np.int64),
                val=data["val"].astype(np.int64),
                test=data["test"].astype(np.int64),
                fingerprint=str(data["fingerprint"]),
                seed=None if seed < 0 else seed,
            )


def make_split(
    dataset: MolecularDataset, n_train: int, n_val: int, n_test: int | None = None, seed: int = 0
) -> Split:
    """Draw disjoint subsets with ``np.random.default_rng(seed)``; ``n_test=None`` takes all the rest."""
    n = dataset.n_frames
    for label, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if value is not None and value < 0:
            raise SplitError(f"{label} = {value}; expected a non-negative frame count")
    n_rest = n - n_train - n_val
    if n_rest < 0 or (n_test is not None and n_test > n_rest):
        raise SplitError(
            f"{dataset.source}: holds {n} frames; the split asks for n_train={n_train} + "
            f"n_val={n_val} + n_test={n_test if n_test is not None else 'rest'}. Lower them or use a "
            "larger dataset."
        )
    order = np.random.default_rng(seed).permutation(n)
    n_test = n_rest if n_test is None else n_test
    train, val = order[:n_train], order[n_train : n_train + n_val]
    test = order[n_train + n_val : n_train + n_val + n_test]
    split = Split(
        train=dataset.indices[np.sort(train)],
        val=dataset.indices[np.sort(val)],
        test=dataset.indices[np.sort(test)],
        fingerprint=dataset.fingerprint,
        seed=seed,
    )
    check_split(split, dataset)
    return split


def frame_hashes(R: np.ndarray) -> np.ndarray:
    """A 16-byte hash of each frame's positions [n_frames] (as hex strings): finds repeated geometries."""
    R = np.ascontiguousarray(R, dtype=np.float64)
    return np.array([hashlib.blake2b(frame.tobytes(), digest_size=16).hexdigest() for frame in R])


def check_split(split: Split, dataset: MolecularDataset) -> None:
    """Raise :class:`SplitError` unless the split belongs to ``dataset`` and its subsets are disjoint,
    both by index and by geometry (a frame duplicated in the file must not land in two subsets)."""
    check_splits([split], [dataset])


def save_splits(path: str | os.PathLike, splits: Sequence[Split]) -> Path:
    """Write the splits of a run: one molecule as :meth:`Split.save`, several as one npz holding
    ``molecules`` and ``train_<k>``, ``val_<k>``, ``test_<k>``, ``fingerprint_<k>``, ``seed_<k>``."""
    if len(splits) == 1:
        return splits[0].save(path)
    arrays: dict[str, np.ndarray] = {"molecules": np.array(len(splits))}
    for k, split in enumerate(splits):
        arrays |= split._arrays(f"_{k}")
    return write_npz_atomic(path, arrays, compress=False)


def load_splits(path: str | os.PathLike) -> list[Split]:
    """The splits of :func:`save_splits` (a one-molecule ``split.npz`` gives a list of one)."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"{path}: no such split file")
    with np.load(path) as data:
        if "molecules" not in data.files:
            return [Split.load(path)]
        splits = []
        for k in range(int(data["molecules"])):
            keys = [f"{name}_{k}" for name in ("train", "val", "test", "fingerprint", "seed")]
            missing = [key for key in keys if key not in data.files]
            if missing:
                raise SplitError(f"{path}: missing {missing}; not a geopatra split file")
            seed = int(data[f"seed_{k}"])
            splits.append(Split(train=data[f"train_{k}"].astype(np.int64), val=data[f"val_{k}"].astype(np.int64),
                                test=data[f"test_{k}"].astype(np.int64), fingerprint=str(data[f"fingerprint_{k}"]),
                                seed=None if seed < 0 else seed))
        return splits


def check_splits(splits: Sequence[Split], datasets: Sequence[MolecularDataset]) -> None:
    """:func:`check_split` for each molecule, in order; the geometry check runs across all of them
    (the same frame in two files must not be trained on and tested on either)."""
    if len(splits) != len(datasets):
        raise SplitError(f"the split holds {len(splits)} molecule(s); the data {len(datasets)}")
    seen: dict[str, tuple[str, int]] = {}  # frame hash -> (subset, molecule)
    for molecule, (split, dataset) in enumerate(zip(splits, datasets)):
        if split.fingerprint != dataset.fingerprint:
            raise SplitError(
                f"split was made for dataset sha256 {split.fingerprint[:12]}…, but {dataset.source} has "
                f"{dataset.fingerprint[:12]}…; drop the split file or pass the dataset it was made for."
            )
        subsets = {"train": split.train, "val": split.val, "test": split.test}
        for label, index in subsets.items():
            if index.size and (index.min() < 0 or index.max() >= dataset.n_frames):
                raise SplitError(f"split {label} indices exceed the {dataset.n_frames} frames of the dataset")
            if np.unique(index).size != index.size:
                raise SplitError(f"split {label} repeats frame indices")
        hashes = frame_hashes(dataset.R)
        for label, index in subsets.items():
            for frame, key in zip(index, hashes[index]):
                other, where = seen.setdefault(key, (label, molecule))
                if other == label:
                    continue
                if where == molecule:
                    raise SplitError(
                        f"{dataset.source}: frame {int(frame)} ({label}) repeats a geometry in the {other} "
                        "subset; duplicate frames across splits leak test data into training. Remove "
                        "duplicates from the file."
                    )
                raise SplitError(
                    f"{dataset.source}: frame {int(frame)} ({label}) repeats a geometry of another "
                    f"file's {other} subset; duplicate frames across splits leak test data into training"
                )
