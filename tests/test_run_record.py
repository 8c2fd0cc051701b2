"""The run record: dictionary round trips, the leakage check, MD's starting frame, bad records, and
checkpoints written before the typed record existed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geopatra.calculator import GeoPatraCalculator
from geopatra.checkpoint import load_potential
from geopatra.data import Split, make_split, read_dataset
from geopatra.errors import CheckpointError, DataError, SplitError
from geopatra.models.sgdml import SGDML
from geopatra.run_record import FORMAT_VERSION, RunRecord

ROOT = Path(__file__).parents[1]
ETHANOL = ROOT / "tests/data/md17_ethanol_2000.npz"
ALA3 = ROOT / "tests/data/md22_Ac-Ala3-NHMe_5frames.xyz"
#: checkpoints written by geopatra before RunRecord (commit b970a8c), see tests/data/README.md
OLD_CHECKPOINTS = {kind: ROOT / f"tests/data/checkpoint_{kind}_format1.ckpt" for kind in ("geopatra", "sgdml")}


def _record(datasets, splits) -> RunRecord:
    return RunRecord.describe(SGDML(), datasets, splits)


@pytest.fixture(scope="module")
def ethanol():
    return read_dataset(ETHANOL)


def test_round_trip_one_and_several_molecules(ethanol) -> None:
    ala3 = read_dataset(ALA3)
    splits = [make_split(ethanol, 10, 5, 5, seed=1), make_split(ala3, 2, 1, 1, seed=1)]
    for datasets, parts in (([ethanol], splits[:1]), ([ethanol, ala3], splits)):
        record = _record(datasets, parts)
        raw = record.to_dict()
        again = RunRecord.from_dict(raw)
        assert again.to_dict() == raw
        assert (again.kind, again.units) == ("sgdml", record.units)
        assert again.class_path == "geopatra.models.sgdml.model.SGDML"
        for ours, theirs, dataset, split in zip(again.molecules, record.molecules, datasets, parts):
            assert ours.fingerprint == dataset.fingerprint == theirs.fingerprint
            assert ours.z == tuple(dataset.z.tolist()) and ours.source_units == dataset.source_units
            np.testing.assert_array_equal(ours.split["test"], split.test)
            assert len(ours.train_frame_hashes) == len(split.train)
    assert set(raw) >= {"molecules", "dataset"} and "split" not in raw  # several: one entry per molecule
    assert raw["dataset"]["z"] == [1, 6, 7, 8] and " + " in raw["dataset"]["name"]
    single = _record([ethanol], splits[:1]).to_dict()
    assert "molecules" not in single and single["dataset"]["fingerprint"] == ethanol.fingerprint


def test_leakage_check_by_index_and_by_geometry(ethanol) -> None:
    split = make_split(ethanol, 10, 5, 5, seed=0)
    record = _record([ethanol], [split])
    record.check_not_trained_on([ethanol], [ethanol.subset(split.test)])
    with pytest.raises(SplitError, match="were in the training set"):
        record.check_not_trained_on([ethanol], [ethanol.subset(split.train[:2])])
    # the same frames in another file (other fingerprint) are found by their geometry
    copy = ethanol.subset(split.train[:3])
    moved = type(ethanol)(R=copy.R, z=copy.z, E=copy.E + 1.0, F=copy.F, source="copy.npz")
    assert moved.fingerprint != ethanol.fingerprint
    with pytest.raises(SplitError, match="3 test frame"):
        record.check_not_trained_on([moved], [moved])


def test_starting_frame_and_its_errors(ethanol) -> None:
    split = make_split(ethanol, 10, 5, 5, seed=0)
    z, positions = _record([ethanol], [split]).starting_frame("val")
    np.testing.assert_array_equal(z, ethanol.z)
    np.testing.assert_array_equal(positions, ethanol.R[split.val[0]])
    ala3 = read_dataset(ALA3)
    several = _record([ethanol, ala3], [split, make_split(ala3, 2, 1, 1)])
    with pytest.raises(DataError, match="2 molecules"):
        several.starting_frame()
    empty = Split(split.train, split.val, np.zeros(0, dtype=np.int64), ethanol.fingerprint)
    with pytest.raises(SplitError, match="empty"):
        _record([ethanol], [empty]).starting_frame("test")


def test_starting_frame_of_the_bundled_dataset_recorded_elsewhere() -> None:
    """A checkpoint keeps the absolute path of its training file; for the bundled dataset that path
    belongs to the installation that trained (or to its former place, geopatra/datasets/)."""
    from geopatra.data.bundled import BUNDLED_FILE, bundled_path

    bundled = read_dataset(bundled_path())
    split = make_split(bundled, 10, 5, 5, seed=0)
    raw = _record([bundled], [split]).to_dict()
    raw["dataset"]["source"] = f"/elsewhere/geopatra/datasets/{BUNDLED_FILE}"
    z, positions = RunRecord.from_dict(raw).starting_frame("test")
    np.testing.assert_array_equal(z, bundled.z)
    np.testing.assert_array_equal(positions, bundled.R[split.test[0]])
    raw["dataset"]["source"] = "/elsewhere/some_other_file.npz"  # not the bundled file: not guessed
    with pytest.raises(DataError, match="no such file"):
        RunRecord.from_dict(raw).starting_frame("test")


def test_bad_records_are_typed_errors(ethanol) -> None:
    raw = _record([ethanol], [make_split(ethanol, 10, 5, 5)]).to_dict()
    with pytest.raises(CheckpointError, match="format 7"):
        RunRecord.from_dict(raw | {"format_version": 7})
    with pytest.raises(CheckpointError, match="lacks"):
        RunRecord.from_dict({k: v for k, v in raw.items() if k != "class_path"})
    assert RunRecord.from_dict(raw).format_version == FORMAT_VERSION


@pytest.mark.parametrize("kind", ["geopatra", "sgdml"])
def test_checkpoints_of_the_untyped_record_still_load(kind) -> None:
    potential, record = load_potential(OLD_CHECKPOINTS[kind])
    assert record.kind == kind and potential.kind == kind
    (molecule,) = record.molecules
    assert molecule.fingerprint == read_dataset(ETHANOL).fingerprint
    assert molecule.split["train"].size == 24 and len(molecule.train_frame_hashes) == 24
    calc = GeoPatraCalculator(OLD_CHECKPOINTS[kind])
    z, positions = molecule.z, read_dataset(ETHANOL).R[int(molecule.split["test"][0])]
    from ase import Atoms

    atoms = Atoms(numbers=z, positions=positions, calculator=calc)
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()
