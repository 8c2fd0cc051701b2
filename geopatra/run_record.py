"""The run record: what a checkpoint says about how its model was made, beyond the weights.

:class:`RunRecord` is the one typed view of it (model kind, class and constructor arguments, units, and
for each molecule trained on: its dataset's identity and the split). Training writes it into every
checkpoint (:meth:`RunRecord.to_dict`); testing, the calculator, MD and the experiments read it back
(:meth:`RunRecord.from_dict`) and ask it questions: was this test frame trained on
(:meth:`RunRecord.check_not_trained_on`), where does MD start (:meth:`RunRecord.starting_frame`).

The dictionary layout (format version 1, plain types only): ``format_version``, ``kind``, ``class_path``,
``init_args``, ``units`` ({length, energy}); for one molecule ``dataset`` ({fingerprint, name, theory,
source, source_units, z}), ``split`` ({train, val, test}: frame indices) and ``train_frame_hashes``;
for several, one such entry per molecule under ``molecules`` and a summary ``dataset``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geopatra.data.dataset import MolecularDataset
from geopatra.data.splits import Split, frame_hashes
from geopatra.errors import CheckpointError, DataError, SplitError
from geopatra.units import SGDML_UNITS, Units

#: Bumped when the record's layout changes incompatibly.
FORMAT_VERSION = 1
SUBSETS = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class TrainedMolecule:
    """One molecule a model was trained on: its dataset's identity and the frames of each subset."""

    name: str
    fingerprint: str  # sha256 of the dataset's arrays (MolecularDataset.fingerprint)
    theory: str
    source: str  # absolute path of the file it was read from ('' if none)
    source_units: Units  # the units the file was read in
    z: tuple[int, ...]
    split: Mapping[str, np.ndarray]  # "train", "val", "test": frame indices into the dataset
    train_frame_hashes: tuple[str, ...]  # geometry hashes of the training frames (frame_hashes)

    @classmethod
    def of(cls, dataset: MolecularDataset, split: Split) -> TrainedMolecule:
        return cls(
            name=dataset.name,
            fingerprint=dataset.fingerprint,
            theory=dataset.theory,
            source=str(Path(dataset.source).resolve()) if dataset.source else "",
            source_units=dataset.source_units,
            z=tuple(int(z) for z in dataset.z),
            split={key: np.asarray(getattr(split, key), dtype=np.int64) for key in SUBSETS},
            train_frame_hashes=tuple(frame_hashes(dataset.R[split.train]).tolist()),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": {
                "fingerprint": self.fingerprint,
                "name": self.name,
                "theory": self.theory,
                "source": self.source,
                "source_units": self.source_units.as_dict(),
                "z": list(self.z),
            },
            "split": {key: self.split[key].tolist() for key in SUBSETS},
            "train_frame_hashes": list(self.train_frame_hashes),
        }

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> TrainedMolecule:
        dataset, split = entry["dataset"], entry.get("split", {})
        units = dataset.get("source_units")
        return cls(
            name=str(dataset.get("name", "")),
            fingerprint=str(dataset.get("fingerprint", "")),
            theory=str(dataset.get("theory", "unknown")),
            source=str(dataset.get("source", "")),
            source_units=Units(**units) if units else SGDML_UNITS,
            z=tuple(int(z) for z in dataset.get("z", [])),
            split={key: np.asarray(split.get(key, []), dtype=np.int64) for key in SUBSETS},
            train_frame_hashes=tuple(entry.get("train_frame_hashes", [])),
        )


@dataclass(frozen=True, eq=False)
class RunRecord:
    """How a checkpoint's model was made (see the module docstring)."""

    kind: str  # "geopatra", "sgdml"
    class_path: str  # module.Class of the potential
    init_args: Mapping[str, Any]  # its constructor arguments
    units: Units = SGDML_UNITS  # of the model's inputs and outputs
    molecules: tuple[TrainedMolecule, ...] = ()  # none for a record made without training data
    format_version: int = field(default=FORMAT_VERSION)

    @classmethod
    def describe(
        cls, potential: Any, datasets: Sequence[MolecularDataset], splits: Sequence[Split]
    ) -> RunRecord:
        """The record of a fit of ``potential`` on ``datasets`` with ``splits`` (one per molecule)."""
        return cls(
            kind=potential.kind,
            class_path=f"{type(potential).__module__}.{type(potential).__qualname__}",
            init_args=dict(potential.init_args),
            units=SGDML_UNITS,
            molecules=tuple(TrainedMolecule.of(d, s) for d, s in zip(datasets, splits)),
        )

    # --- what it says ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The training data's name (``a + b`` for several molecules)."""
        return " + ".join(m.name for m in self.molecules)

    @property
    def fingerprint(self) -> str:
        """The training dataset's sha256; for several molecules a sha256 of theirs, in order."""
        if len(self.molecules) == 1:
            return self.molecules[0].fingerprint
        if not self.molecules:
            return ""
        return hashlib.sha256("".join(m.fingerprint for m in self.molecules).encode()).hexdigest()

    def check_not_trained_on(self, datasets: Sequence[MolecularDataset], tests: Sequence[MolecularDataset]) -> None:
        """Raise :class:`SplitError` if a frame of ``tests`` (the test frames of each of ``datasets``)
        was trained on: by dataset fingerprint and frame index for the same file, by geometry hash for
        any other file holding the same frames."""
        trained = {m.fingerprint: m.split["train"] for m in self.molecules}
        hashes = np.array([h for m in self.molecules for h in m.train_frame_hashes], dtype=str)
        for dataset, test in zip(datasets, tests):
            if dataset.fingerprint in trained:
                overlap = np.intersect1d(trained[dataset.fingerprint], test.indices)
            else:
                overlap = test.indices[np.isin(frame_hashes(test.R), hashes)]
            if overlap.size:
                raise SplitError(
                    f"{overlap.size} test frame(s) of {dataset.name or dataset.source} (e.g. frame "
                    f"{int(overlap[0])}) were in the training set of this checkpoint; testing on them "
                    "would report training error. Use the run's split.npz (--data.split_file) or a "
                    "different dataset."
                )

    def starting_frame(self, subset: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """Atomic numbers [n_atoms] and positions [n_atoms, 3] Å of the first frame of ``subset`` of
        the one molecule trained on, read from its file (checked against the fingerprint)."""
        from geopatra.data import read_dataset

        if len(self.molecules) != 1:
            raise DataError(
                f"the model was trained on {len(self.molecules)} molecules ({self.name or 'none recorded'}); "
                "give a structure to say which one"
            )
        molecule = self.molecules[0]
        units = molecule.source_units  # the file as it was read for training
        dataset = read_dataset(_training_file(molecule.source), length_unit=units.length, energy_unit=units.energy)
        if dataset.fingerprint != molecule.fingerprint:
            raise SplitError(f"{molecule.source} changed since training (sha256 differs); give a structure")
        frames = molecule.split[subset]
        if not frames.size:
            raise SplitError(f"the {subset} split of {molecule.name} is empty; give a structure")
        return np.array(dataset.z), np.array(dataset.R[int(frames[0])])

    # --- the dictionary in a checkpoint ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        record = {
            "format_version": self.format_version,
            "kind": self.kind,
            "class_path": self.class_path,
            "init_args": dict(self.init_args),
            "units": self.units.as_dict(),
        }
        if len(self.molecules) == 1:
            return record | self.molecules[0].to_dict()
        summary = {"fingerprint": self.fingerprint, "name": self.name,
                   "z": sorted({z for m in self.molecules for z in m.z})}
        return record | {"dataset": summary, "molecules": [m.to_dict() for m in self.molecules]}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any], where: str = "checkpoint") -> RunRecord:
        """Read a record written by :meth:`to_dict` (``where`` names it in errors)."""
        version = record.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"{where}: geopatra checkpoint format {version}; this geopatra reads format "
                f"{FORMAT_VERSION}. Retrain, or use the geopatra version that wrote it."
            )
        missing = [key for key in ("kind", "class_path", "init_args", "units") if key not in record]
        if missing:
            raise CheckpointError(f"{where}: the geopatra record lacks {missing}")
        if "molecules" in record:
            molecules = tuple(TrainedMolecule.from_dict(m) for m in record["molecules"])
        elif record.get("dataset", {}).get("fingerprint"):
            molecules = (TrainedMolecule.from_dict(record),)
        else:
            molecules = ()
        return cls(
            kind=str(record["kind"]),
            class_path=str(record["class_path"]),
            init_args=dict(record["init_args"]),
            units=Units(**record["units"]),
            molecules=molecules,
            format_version=int(version),
        )


def _training_file(source: str) -> str:
    """The file a molecule was read from for training. The bundled dataset, recorded at the path of
    the installation that trained (or at its former place, ``geopatra/datasets/``), is found in this
    installation when that path is gone; the caller's fingerprint check still applies."""
    from geopatra.data.bundled import BUNDLED_FILE, bundled_path

    if source and not Path(source).exists() and Path(source).name == BUNDLED_FILE:
        return str(bundled_path())
    return source
