"""The benchmark datasets and the nested splits every model trains on (one fixed validation
and test set per dataset, training sets that grow as prefixes of one seeded permutation)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments import layout


@dataclass(frozen=True)
class BenchData:
    """A benchmark dataset: ``path`` as ``geopatra.data.read_dataset`` takes it."""

    key: str
    path: str
    label: str


DATASETS = {
    "ala3": BenchData("ala3", "bundled", "Ac-Ala3-NHMe (42 atoms), GFN2-xTB, bundled 2000 frames"),
    "ethanol": BenchData(
        "ethanol", "tests/data/ethanol_ccsd_t-train.npz", "ethanol (9 atoms), CCSD(T), sGDML file, 1000 frames"
    ),
}


def index_digest(index: np.ndarray) -> str:
    """First 12 hex digits of the sha256 of the frame indices (int64): names the exact frames."""
    return hashlib.sha256(np.ascontiguousarray(index, dtype=np.int64).tobytes()).hexdigest()[:12]


def nested_splits(data: BenchData, sizes: list[int], n_val: int, n_test: int, work: Path,
                  seed: int = 0) -> dict[int, Path]:
    """Split files ``<work>/splits/<data>/split_v<n_val>_t<n_test>_M<M>.npz`` for each training size.

    One seeded permutation of the frames: validation = its first ``n_val``, test = the next
    ``n_test``, training set of size M = the next M (so smaller training sets are subsets of larger
    ones, and validation and test frames are the same for every size and every model).
    """
    from geopatra.data import read_dataset
    from geopatra.data.splits import Split, check_split

    dataset = read_dataset(data.path)
    val, test, pool = _partition(data, dataset.n_frames, max(sizes), n_val, n_test, seed)
    out = {}
    for m in sizes:
        split = Split(train=np.sort(pool[:m]), val=np.sort(val), test=np.sort(test),
                      fingerprint=dataset.fingerprint, seed=seed)
        check_split(split, dataset)
        out[m] = split.save(work / "splits" / data.key / f"split_v{n_val}_t{n_test}_M{m}.npz")
    return out


def unused_frames(data: BenchData, sizes: list[int], n_val: int, n_test: int, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of the frames in none of the splits ``nested_splits`` makes with these arguments:
    the seeded permutation's frames after the largest training set."""
    from geopatra.data import read_dataset

    pool = _partition(data, read_dataset(data.path).n_frames, max(sizes), n_val, n_test, seed)[2]
    return np.sort(pool[max(sizes) :])


def _partition(data: BenchData, n: int, largest: int, n_val: int, n_test: int,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation, test and training pool of one seeded permutation of ``n`` frames."""
    if largest + n_val + n_test > n:
        raise ValueError(f"{data.label}: {largest} + {n_val} + {n_test} frames asked, {n} available")
    order = np.random.default_rng(seed).permutation(n)
    return order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]


def split_facts(split_file: Path) -> dict:
    """What a report says about the frames: file, seed, sizes and index digests."""
    with np.load(split_file) as s:
        return {
            "split_file": layout.repo_relative(split_file),
            "n_train": int(len(s["train"])), "n_val": int(len(s["val"])), "n_test": int(len(s["test"])),
            "train_sha": index_digest(s["train"]), "test_sha": index_digest(s["test"]),
            "seed": int(s["seed"]) if "seed" in s.files else None,
        }


def frames_file(data: BenchData, split_file: Path, out: Path, **extra: object) -> Path:
    """The side-frames npz (``write_side_frames``) of ``data`` with the indices of ``split_file``."""
    from geopatra.data import read_dataset

    with np.load(split_file) as s:
        indices = {"train": s["train"], "val": s["val"], "test": s["test"]}
    return write_side_frames(out, read_dataset(data.path), indices, **extra)


def write_side_frames(out: Path, dataset, indices: dict[str, np.ndarray], **extra: object) -> Path:
    """The one npz the foreign tools' sides read (``mace_side.py``, ``sgdml_reference/run_reference.py``):
    R [n, N, 3] (Å), z [N], E [n] (kcal/mol), F [n, N, 3] (kcal/mol/Å) of ``dataset``, the split
    ``indices`` (train, test and optionally val), and ``extra`` (e.g. sigma, lam, perms)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, R=dataset.R, z=dataset.z, E=dataset.E, F=dataset.F, **indices, **extra)
    return out
