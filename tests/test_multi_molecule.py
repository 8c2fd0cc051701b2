"""Several molecules in one model: readers, per-molecule splits, mixed batches, sGDML's refusal, and
a GeoPaTra trained on two molecules that reports each one's test errors."""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

from geopatra.cli import main
from geopatra.data import MolecularDataset, Split, read_dataset
from geopatra.data.datamodule import MolecularDataModule
from geopatra.data.extxyz import read_extxyz, read_extxyz_molecules
from geopatra.data.io import read_molecules
from geopatra.data.splits import check_splits, load_splits, save_splits
from geopatra.errors import DataError, ShapeError, SplitError, UnitError

ROOT = Path(__file__).parents[1]
ETHANOL = ROOT / "tests/data/ethanol_ccsd_t-train.npz"  # 9 atoms, kcal/mol
ALA3 = ROOT / "tests/data/md22_Ac-Ala3-NHMe_5frames.xyz"  # 42 atoms, `Energy` key: kcal/mol
TINY = {kind: ROOT / f"tests/configs/{kind}_tiny.yaml" for kind in ("geopatra", "sgdml")}


def write_interleaved(path: Path, datasets: list[MolecularDataset], energy_key: str = "Energy") -> None:
    """Frames of ``datasets`` alternating in one extxyz file (energies under ``energy_key``, as stored)."""
    frames = []
    for i in range(max(d.n_frames for d in datasets)):
        for d in datasets:
            if i < d.n_frames:
                atoms = Atoms(numbers=d.z, positions=d.R[i])
                atoms.info[energy_key] = float(d.E[i])
                atoms.arrays["REF_forces"] = np.array(d.F[i])
                frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def test_extxyz_with_two_compositions_reads_as_two_molecules(tmp_path, capsys) -> None:
    ethanol, ala3 = read_dataset(ETHANOL).subset(np.arange(6)), read_dataset(ALA3)
    path = tmp_path / "mixed.xyz"
    write_interleaved(path, [ethanol, ala3])
    molecules = read_extxyz_molecules(path)
    assert [m.n_atoms for m in molecules] == [9, 42]
    assert len({m.name for m in molecules}) == 2 and all(m.name.startswith("mixed_") for m in molecules)
    assert [m.n_frames for m in molecules] == [6, 5]  # in file order within each (R compared below)
    for read, original in zip(molecules, (ethanol, ala3)):
        np.testing.assert_allclose(read.R, original.R, atol=1e-7)
        np.testing.assert_allclose(read.E, original.E, rtol=1e-12)  # `Energy`: kcal/mol, no conversion
        np.testing.assert_allclose(read.F, original.F, rtol=1e-9, atol=1e-8)  # ASE writes 8 decimals
    with pytest.raises(ShapeError, match=r"--data\.path"):
        read_extxyz(path)  # the one-molecule reader says where several molecules are read
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "(9 atoms)" in out and "(42 atoms)" in out


def test_mixed_units_and_repeated_data_are_refused(tmp_path) -> None:
    in_ev = tmp_path / "ethanol_ev.xyz"
    write_interleaved(in_ev, [read_dataset(ETHANOL).subset(np.arange(4))], energy_key="REF_energy")
    with pytest.raises(UnitError, match="different units"):
        read_molecules([str(in_ev), str(ALA3)])  # eV by its key's dialect, and kcal/mol
    both = read_molecules([str(in_ev), str(ALA3)], energy_unit="kcal/mol")  # the user says what both mean
    assert [m.n_atoms for m in both] == [9, 42]
    with pytest.raises(DataError, match="same data"):
        read_molecules([str(ETHANOL), str(ETHANOL)])
    with pytest.raises(DataError, match="no dataset path"):
        read_molecules([])


def test_data_module_splits_each_molecule_and_mixes_batches(tmp_path) -> None:
    paths = [str(ETHANOL), str(ALA3)]
    dm = MolecularDataModule(path=paths, n_train=[10, 3], n_val=[4, 1], n_test=[6, 1], batch_size=4)
    dm.load()
    assert [(len(s.train), len(s.val), len(s.test)) for s in dm.splits] == [(10, 4, 6), (3, 1, 1)]
    assert [s.fingerprint for s in dm.splits] == [d.fingerprint for d in dm.datasets]
    assert len(set(dm.molecule_names)) == 2
    with pytest.raises(DataError, match="2 molecules"):
        _ = dm.dataset
    batches = list(dm.train_dataloader())
    tags = torch.cat([b.molecule for b in batches])
    assert torch.bincount(tags).tolist() == [10, 3]
    assert any(b.molecule.unique().numel() == 2 for b in batches)  # batches mix molecules of 9 and 42 atoms
    for b in batches:
        counts = torch.bincount(b.batch, minlength=b.num_graphs)
        assert counts.tolist() == [9 if int(k) == 0 else 42 for k in b.molecule]
    # one split file for both, read back identically and reused as the split of a new data module
    path = save_splits(tmp_path / "split.npz", dm.splits)
    for loaded, made in zip(load_splits(path), dm.splits):
        for subset in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(loaded, subset), getattr(made, subset))
    with pytest.raises(SplitError, match="2 molecules"):
        Split.load(path)
    again = MolecularDataModule(path=paths, split_file=str(path), n_train=1, n_val=1)
    again.load()
    np.testing.assert_array_equal(again.splits[1].train, dm.splits[1].train)
    with pytest.raises(SplitError, match="sha256"):
        MolecularDataModule(path=paths[::-1], split_file=str(path)).load()
    with pytest.raises(DataError, match="one per molecule"):
        MolecularDataModule(path=paths, n_train=[10, 3, 5]).load()


def test_a_frame_in_two_files_cannot_be_trained_on_and_tested_on() -> None:
    ethanol = read_dataset(ETHANOL)
    a = MolecularDataset(R=ethanol.R[:20], z=ethanol.z, E=ethanol.E[:20], F=ethanol.F[:20], source="a.npz")
    b = MolecularDataset(R=ethanol.R[10:30], z=ethanol.z, E=ethanol.E[10:30], F=ethanol.F[10:30], source="b.npz")

    def split(dataset, train, val, test):
        return Split(np.array(train), np.array(val), np.array(test), dataset.fingerprint)

    check_splits([split(a, [10], [0], [1]), split(b, [0], [15], [16])], [a, b])  # the same frame, both train
    with pytest.raises(SplitError, match="another file"):
        check_splits([split(a, [10], [0], [1]), split(b, [5], [6], [0])], [a, b])  # a's frame 10 is b's 0
    with pytest.raises(SplitError, match="holds 1 molecule"):
        check_splits([split(a, [10], [0], [1])], [a, b])


def test_sgdml_refuses_several_molecules(tmp_path, capsys) -> None:
    args = ["fit", "--config", str(TINY["sgdml"]), "--data.path", f"[{ETHANOL},{ALA3}]",
            "--data.n_train", "[10,3]", "--data.n_val", "[4,1]", "--data.n_test", "[4,1]",
            "--trainer.default_root_dir", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: DataError:") and "describes one molecule" in err[-1]


@pytest.mark.slow
def test_geopatra_trains_on_two_molecules_and_reports_each(tmp_path) -> None:
    run = tmp_path / "run"
    common = ["--config", str(TINY["geopatra"]), "--data.path", f"[{ETHANOL},{ALA3}]",
              "--data.n_train", "[24,3]", "--data.n_val", "[4,1]", "--data.n_test", "[8,1]",
              "--trainer.default_root_dir", str(run)]
    assert main(["fit", *common, "--trainer.max_epochs", "2"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    assert len(load_splits(run / "split.npz")) == 2
    assert main(["test", *common, "--ckpt_path", str(last)]) == 0
    report = json.loads((run / "metrics.json").read_text())
    assert report["n_test_frames"] == 9
    per_molecule = report["per_molecule"]
    assert len(per_molecule) == 2
    (ethanol, ala3) = per_molecule.values()
    # the overall force MAE is the component-weighted mean of the molecules' (8 x 9 and 1 x 42 atoms)
    weights = np.array([8 * 9 * 3, 1 * 42 * 3])
    expected = np.dot(weights, [ethanol["force_mae_kcal_mol_A"], ala3["force_mae_kcal_mol_A"]]) / weights.sum()
    assert report["metrics"]["force_mae_kcal_mol_A"] == pytest.approx(expected, rel=1e-9)
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    record = checkpoint["geopatra"]
    assert [m["dataset"]["z"] for m in record["molecules"]] == [read_dataset(p).z.tolist() for p in (ETHANOL, ALA3)]
    seen = checkpoint["state_dict"]["potential.seen_elements"]
    assert torch.nonzero(seen).flatten().tolist() == [1, 6, 7, 8]  # nitrogen only in the peptide
    assert main(["md", "--checkpoint", str(last), "--steps", "2", "--output", str(tmp_path / "md")]) == 2
