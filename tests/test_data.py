"""Readers, writer, validation errors and splits on the real fixtures in tests/data."""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase import units as ase_units

from geopatra.data import (
    MolecularDataset,
    Split,
    check_split,
    make_split,
    read_dataset,
    read_extxyz,
    read_npz,
    write_npz,
)
from geopatra.errors import (
    DataError,
    ElementError,
    MissingKeyError,
    NonFiniteError,
    ShapeError,
    SplitError,
    UnitError,
)

KCAL_PER_EV = ase_units.mol / ase_units.kcal  # 1 eV in kcal/mol


# --- readers on the real fixtures ------------------------------------------------------------------
def test_md22_extxyz_with_capital_energy_key(data_dir):
    ds = read_extxyz(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz")
    assert (ds.n_frames, ds.n_atoms) == (5, 42)
    assert ds.E[0] == pytest.approx(-620726.002662)  # first comment line, kcal/mol
    first_atom = (data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz").read_text().splitlines()[2].split()
    np.testing.assert_allclose(ds.R[0, 0], [float(x) for x in first_atom[1:4]])
    np.testing.assert_allclose(ds.F[0, 0], [float(x) for x in first_atom[4:7]])
    assert ds.R.dtype == np.float64 and ds.z.dtype == np.int64


def test_sgdml_npz_with_metadata(data_dir):
    ds = read_npz(data_dir / "ethanol_ccsd_t-train.npz")
    raw = np.load(data_dir / "ethanol_ccsd_t-train.npz")
    assert ds.E.shape == (1000,)  # (n, 1) in the file
    np.testing.assert_array_equal(ds.E, raw["E"][:, 0])
    assert ds.name == "ethanol_ccsd"
    assert ds.theory == "Psi4: CCSD(T), cc-pVTZ"
    assert ds.metadata["md5"] == raw["md5"].item().decode()
    assert sorted(ds.z.tolist()) == [1, 1, 1, 1, 1, 1, 6, 6, 8]


def test_md17_npz_without_units_logs_convention(data_dir, caplog):
    with caplog.at_level("INFO"):
        ds = read_npz(data_dir / "md17_ethanol_2000.npz")
    assert ds.n_frames == 2000
    assert "sGDML convention" in caplog.text
    assert ds.source_units.energy == "kcal/mol"


def test_rmd17_extxyz_lowercase_energy(data_dir):
    """rMD17 converted to extxyz stores kcal/mol under ASE's `energy` key: it needs its unit named."""
    ds = read_dataset(data_dir / "rmd17_ethanol_100.xyz", energy_unit="kcal/mol")
    assert (ds.n_frames, ds.n_atoms) == (100, 9)
    assert ds.E[0] == pytest.approx(-97079.92222178938)
    as_ase = read_dataset(data_dir / "rmd17_ethanol_100.xyz")  # ASE's key, so ASE's unit: eV
    assert as_ase.source_units.energy == "eV"
    assert as_ase.E[0] == pytest.approx(-97079.92222178938 * KCAL_PER_EV)


def _frames_in_ev(data_dir, n: int = 3):
    """The first frames of the MD22 file (kcal/mol) and their energies and forces in eV."""
    from ase.io import read

    frames = read(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz", index=f":{n}")
    reference = read_extxyz(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz")
    return frames, reference.E[:n] / KCAL_PER_EV, reference.F[:n] / KCAL_PER_EV, reference


@pytest.mark.parametrize("dialect", ["ase_calculator", "mace"])
def test_ase_and_mace_extxyz_files_are_read_in_ev(dialect, tmp_path, data_dir, caplog):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames, e_ev, f_ev, reference = _frames_in_ev(data_dir)
    for atoms, e, f in zip(frames, e_ev, f_ev):
        atoms.info.pop("Energy", None)
        atoms.arrays.pop("forces", None)
        atoms.calc = None
        if dialect == "mace":
            atoms.info["REF_energy"], atoms.arrays["REF_forces"] = float(e), f.copy()
        else:  # what any ASE calculator leaves, written by ase.io
            atoms.calc = SinglePointCalculator(atoms, energy=float(e), forces=f.copy())
    path = tmp_path / f"{dialect}.extxyz"
    write(path, frames, format="extxyz")
    with caplog.at_level("INFO"):
        ds = read_dataset(path)
    assert ds.source_units.energy == "eV" and "read as eV" in caplog.text
    np.testing.assert_allclose(ds.E, reference.E[:3], rtol=1e-12)
    np.testing.assert_allclose(ds.F, reference.F[:3], rtol=0, atol=1e-6)  # ase.io writes 8 decimals (eV/Å)
    assert "eV" in ds.summary()


def test_sgdml_style_extxyz_stays_kcal_per_mol(data_dir):
    ds = read_dataset(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz")  # Energy= (capital E)
    assert ds.source_units.energy == "kcal/mol"
    assert ds.E[0] == pytest.approx(-620726.002662)


def test_forces_key_and_its_errors(tmp_path, data_dir):
    from ase.io import write

    frames, _, _, reference = _frames_in_ev(data_dir)
    for atoms in frames:  # ase.io moved the forces column into a single-point calculator
        atoms.arrays["my_forces"] = atoms.get_forces()
        atoms.calc = None
    path = tmp_path / "keys.extxyz"
    write(path, frames, format="extxyz")
    with pytest.raises(MissingKeyError, match=r"--data\.forces_key"):
        read_dataset(path)
    ds = read_dataset(path, forces_key="my_forces")
    np.testing.assert_allclose(ds.F, reference.F[:3], rtol=1e-12)
    with pytest.raises(DataError, match="extxyz files only"):
        read_dataset(data_dir / "md17_ethanol_2000.npz", forces_key="F")


def test_extxyz_explicit_energy_key_and_missing_key(data_dir):
    ds = read_extxyz(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz", energy_key="Energy")
    assert ds.n_frames == 5
    with pytest.raises(MissingKeyError, match="free_energy"):
        read_extxyz(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz", energy_key="free_energy")


def test_ev_file_is_converted(tmp_path, data_dir):
    ds = read_npz(data_dir / "md17_ethanol_2000.npz")
    path = tmp_path / "ev.npz"
    np.savez(
        path, R=ds.R, z=ds.z, E=ds.E / KCAL_PER_EV, F=ds.F / KCAL_PER_EV, r_unit="Ang", e_unit="eV"
    )
    converted = read_npz(path)
    np.testing.assert_allclose(converted.E, ds.E, rtol=1e-12)
    np.testing.assert_allclose(converted.F, ds.F, rtol=1e-12)
    # bohr positions: length conversion applies to R and to forces
    np.savez(path, R=ds.R / ase_units.Bohr, z=ds.z, E=ds.E, F=ds.F * ase_units.Bohr, r_unit="bohr",
             e_unit="kcal/mol")
    converted = read_npz(path)
    np.testing.assert_allclose(converted.R, ds.R, rtol=1e-12)
    np.testing.assert_allclose(converted.F, ds.F, rtol=1e-12)


def test_unit_override_beats_file_keys(tmp_path, data_dir):
    ds = read_npz(data_dir / "md17_ethanol_2000.npz")
    path = tmp_path / "x.npz"
    np.savez(path, R=ds.R, z=ds.z, E=ds.E, F=ds.F)
    as_ev = read_npz(path, energy_unit="eV")
    np.testing.assert_allclose(as_ev.E, ds.E * KCAL_PER_EV)


def test_npz_round_trip(tmp_path, data_dir):
    ds = read_dataset(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz")
    path = write_npz(ds, tmp_path / "out" / "ala.npz", temperature=500.0)
    back = read_npz(path)
    for key in "RzEF":
        np.testing.assert_array_equal(getattr(back, key), getattr(ds, key))
    assert back.fingerprint == ds.fingerprint
    assert back.name == ds.name
    assert float(back.metadata["temperature"]) == 500.0
    assert back.metadata["sha256"] == ds.fingerprint
    assert back.source_units.energy == "kcal/mol"


def test_reader_speed_is_reasonable(data_dir):
    import time

    start = time.perf_counter()
    read_npz(data_dir / "md17_ethanol_2000.npz")
    assert time.perf_counter() - start < 2.0


# --- bad input ---------------------------------------------------------------------------------------
@pytest.fixture
def good(data_dir):
    ds = read_npz(data_dir / "ethanol_ccsd_t-train.npz")
    return {"R": np.array(ds.R[:10]), "z": np.array(ds.z), "E": np.array(ds.E[:10]),
            "F": np.array(ds.F[:10])}


def _write(tmp_path, arrays, name="bad.npz", **extra):
    path = tmp_path / name
    np.savez(path, **arrays, **extra)
    return path


def test_missing_key_names_file_key_and_fix(tmp_path, good):
    del good["F"]
    path = _write(tmp_path, good)
    with pytest.raises(MissingKeyError) as info:
        read_npz(path)
    message = str(info.value)
    assert "bad.npz" in message and "'F'" in message and "forces" in message


@pytest.mark.parametrize(
    "key, bad_value, error, text",
    [
        ("F", lambda g: g["F"][..., :2], ShapeError, r"\(10, 9, 2\)"),
        ("R", lambda g: g["R"][0], ShapeError, "n_frames, n_atoms, 3"),
        ("E", lambda g: g["E"][:7], ShapeError, r"\(7,\)"),
        ("z", lambda g: g["z"][:8], ShapeError, r"\(9,\)"),
        ("E", lambda g: np.where(np.arange(10) == 3, np.nan, g["E"]), NonFiniteError, "frame 3"),
        ("F", lambda g: np.where(np.abs(g["F"]) > 20, np.inf, g["F"]), NonFiniteError, "'F'"),
        ("z", lambda g: np.where(np.arange(9) == 2, 0, g["z"]), ElementError, "atomic number 0"),
        ("z", lambda g: np.where(np.arange(9) == 2, 150, g["z"]), ElementError, "150"),
    ],
)
def test_bad_arrays_raise_typed_errors(tmp_path, good, key, bad_value, error, text):
    good[key] = bad_value(good)
    path = _write(tmp_path, good)
    with pytest.raises(error, match=text) as info:
        read_npz(path)
    assert "bad.npz" in str(info.value)
    assert isinstance(info.value, DataError)


def test_unknown_unit_string(tmp_path, good):
    path = _write(tmp_path, good, r_unit="furlong", e_unit="kcal/mol")
    with pytest.raises(UnitError, match="furlong"):
        read_npz(path)
    with pytest.raises(UnitError, match="calories"):
        read_npz(_write(tmp_path, good, "ok.npz"), energy_unit="calories")


def test_not_an_npz_and_missing_file(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz"):
        read_npz(junk)
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "absent.npz")
    with pytest.raises(DataError, match="unknown format"):
        (tmp_path / "a.csv").write_text("x")
        read_dataset(tmp_path / "a.csv")


def test_extxyz_inconsistent_atom_counts(tmp_path, data_dir):
    lines = (data_dir / "rmd17_ethanol_100.xyz").read_text().splitlines(keepends=True)
    frame = 11  # 9 atoms + 2 header lines
    second = lines[frame : 2 * frame]
    broken = [*lines[:frame], "8\n", second[1], *second[2:-1]]
    path = tmp_path / "broken.xyz"
    path.write_text("".join(broken))
    with pytest.raises(ShapeError, match="frame 1 holds 8 atoms"):
        read_extxyz(path)


# --- splits -------------------------------------------------------------------------------------------
@pytest.fixture
def ethanol(data_dir) -> MolecularDataset:
    return read_npz(data_dir / "md17_ethanol_2000.npz")


def test_split_is_seeded_disjoint_and_test_takes_the_rest(ethanol):
    a = make_split(ethanol, n_train=100, n_val=50, seed=3)
    b = make_split(ethanol, n_train=100, n_val=50, seed=3)
    c = make_split(ethanol, n_train=100, n_val=50, seed=4)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)
    assert len(a.test) == 2000 - 150
    union = np.concatenate([a.train, a.val, a.test])
    assert np.unique(union).size == 2000
    fixed = make_split(ethanol, n_train=100, n_val=50, n_test=10, seed=3)
    assert len(fixed.test) == 10


def test_split_file_round_trip(tmp_path, ethanol):
    split = make_split(ethanol, 20, 10, 30, seed=1)
    back = Split.load(split.save(tmp_path / "split.npz"))
    np.testing.assert_array_equal(back.train, split.train)
    np.testing.assert_array_equal(back.test, split.test)
    assert back.fingerprint == ethanol.fingerprint and back.seed == 1
    check_split(back, ethanol)


def test_two_writers_of_one_split_file_do_not_collide(tmp_path, ethanol, monkeypatch):
    """Two processes that make the same split at once (e.g. two probe runs started together) each
    write a temporary file and rename it; a shared temporary name made the second rename fail."""
    split = make_split(ethanol, 20, 10, 30, seed=1)
    target = tmp_path / "split.npz"
    real_replace = os.replace
    interleaved = []

    def let_the_other_writer_finish_first(src, dst):
        if not interleaved:  # the other writer saves and renames between our write and our rename
            interleaved.append(True)
            split.save(target)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", let_the_other_writer_finish_first)
    split.save(target)
    assert interleaved
    np.testing.assert_array_equal(Split.load(target).train, split.train)
    assert [f.name for f in tmp_path.iterdir()] == ["split.npz"]  # no temporary file left behind


def test_split_errors(ethanol, data_dir):
    with pytest.raises(SplitError, match="holds 2000 frames"):
        make_split(ethanol, n_train=1990, n_val=20)
    with pytest.raises(SplitError, match="holds 2000 frames"):
        make_split(ethanol, n_train=10, n_val=10, n_test=1990)
    other = read_npz(data_dir / "ethanol_ccsd_t-train.npz")
    with pytest.raises(SplitError, match="made for dataset"):
        check_split(make_split(other, 10, 10), ethanol)
    overlapping = Split(np.array([1, 2]), np.array([2, 3]), np.array([4]), ethanol.fingerprint)
    with pytest.raises(SplitError, match="repeats a geometry"):
        check_split(overlapping, ethanol)


def test_duplicate_geometry_across_splits_is_refused(ethanol):
    R = np.array(ethanol.R[:20])
    R[7] = R[2]  # the file holds the same geometry twice
    dup = MolecularDataset(R=R, z=ethanol.z, E=ethanol.E[:20], F=ethanol.F[:20])
    split = Split(np.array([2, 3]), np.array([7]), np.array([10]), dup.fingerprint)
    with pytest.raises(SplitError, match=r"frame 7 .*repeats a geometry in the train"):
        check_split(split, dup)


def test_pair_distance_range_covers_every_frame_and_is_in_the_summary(data_dir):
    ds = read_dataset(data_dir / "md22_Ac-Ala3-NHMe_5frames.xyz")
    R = ds.R.copy()
    R[3, 0] += 40.0  # one atom of one frame, in the second chunk of two frames, moved far away
    far = MolecularDataset(R=R, z=ds.z, E=ds.E, F=ds.F)
    d = np.linalg.norm(R[:, :, None] - R[:, None], axis=-1)
    off_diagonal = ~np.eye(ds.n_atoms, dtype=bool)
    expected = (d[:, off_diagonal].min(), d.max())
    assert far.pair_distance_range(pairs_per_chunk=2 * 41 * 42 // 2) == pytest.approx(expected, rel=1e-12)
    assert far.pair_distance_range()[1] > 40.0 > ds.pair_distance_range()[1]
    assert f"{expected[1]:.2f} Å" in far.summary()
    one_atom = MolecularDataset(R=R[:, :1], z=ds.z[:1], E=ds.E, F=ds.F[:, :1])
    assert "distance" not in one_atom.summary()
    with pytest.raises(ValueError, match="two atoms"):
        one_atom.pair_distance_range()
