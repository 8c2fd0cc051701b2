"""The ASE calculator on checkpoints of both model kinds trained on the bundled data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.test import calculate_numerical_forces

from geopatra import GeoPatraCalculator
from geopatra.checkpoint import CHECKPOINT_KEY, load_potential
from geopatra.data import read_dataset
from geopatra.errors import CheckpointError, ElementError, IncompatibleMoleculeError, PeriodicSystemError
from geopatra.models.forces import energy_and_forces

KINDS = ["geopatra", "sgdml"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def molecule() -> Atoms:
    ds = read_dataset("bundled")
    return Atoms(numbers=ds.z, positions=ds.R[-1])


@pytest.mark.parametrize("kind", KINDS)
def test_forces_are_central_differences_of_the_energy(bundled_checkpoints, molecule, kind):
    atoms = molecule.copy()
    atoms.calc = GeoPatraCalculator(bundled_checkpoints[kind], dtype="float64")
    reference = atoms.get_forces()[::5]
    # best of a sweep of steps: truncation error falls as eps², round-off grows as 1/eps
    error = min(
        np.abs(calculate_numerical_forces(atoms, eps, range(0, len(atoms), 5)) - reference).max()
        for eps in (1e-3, 3e-4, 1e-4, 3e-5)
    )
    assert error < 1e-6 * max(1.0, np.abs(reference).max()), error


@pytest.mark.parametrize("kind", KINDS)
def test_ev_conversion_matches_model_output_in_kcal_per_mol(bundled_checkpoints, molecule, kind):
    atoms = molecule.copy()
    calc = GeoPatraCalculator(bundled_checkpoints[kind])
    atoms.calc = calc
    potential, record = load_potential(bundled_checkpoints[kind])
    assert record.units.as_dict() == {"length": "Ang", "energy": "kcal/mol"}
    pos = torch.as_tensor(atoms.positions, dtype=calc.dtype)
    z = torch.as_tensor(atoms.numbers)
    energy, forces = energy_and_forces(potential, pos, z, torch.zeros_like(z), 1)
    kcal_mol_in_ev = units.kcal / units.mol  # 0.0433641 eV
    assert kcal_mol_in_ev == pytest.approx(0.0433641, rel=1e-5)
    assert atoms.get_potential_energy() == pytest.approx(energy.item() * kcal_mol_in_ev, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), forces.double().numpy() * kcal_mol_in_ev, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_results_are_cached_until_atoms_move(bundled_checkpoints, molecule, kind):
    atoms = molecule.copy()
    calc = GeoPatraCalculator(bundled_checkpoints[kind], dtype="float64")
    atoms.calc = calc
    calls = []
    calc.potential.register_forward_hook(lambda *args: calls.append(1))
    e0 = atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energy()
    assert len(calls) == 1
    atoms.positions[3] += 0.01
    e_moved = atoms.get_potential_energy()
    assert len(calls) == 2
    assert e_moved != e0


def test_per_atom_energies_sum_to_the_energy(bundled_checkpoints, molecule):
    atoms = molecule.copy()
    atoms.calc = GeoPatraCalculator(bundled_checkpoints["geopatra"], dtype="float64")
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    atoms.calc = GeoPatraCalculator(bundled_checkpoints["sgdml"])
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_potential_energies()


@pytest.mark.parametrize("kind", KINDS)
def test_a_molecule_split_across_the_box_edge_is_the_whole_molecule(bundled_checkpoints, molecule, kind):
    whole = molecule.copy()
    whole.calc = GeoPatraCalculator(bundled_checkpoints[kind], dtype="float64")
    energy, forces = whole.get_potential_energy(), whole.get_forces()
    boxed = molecule.copy()
    boxed.set_cell([[18.0, 0, 0], [3.0, 17.0, 0], [0, 0, 19.0]])  # triclinic
    boxed.pbc = True
    boxed.positions -= boxed.positions[7] - 0.02  # atom 7 near the corner: the molecule crosses every face
    boxed.wrap()
    spread = np.ptp(boxed.get_scaled_positions(), axis=0)
    assert np.all(spread > 0.5)  # it is split (whole, it would span about 0.5 box lengths at most)
    boxed.calc = GeoPatraCalculator(bundled_checkpoints[kind], dtype="float64")
    assert boxed.get_potential_energy() == pytest.approx(energy, rel=1e-11, abs=1e-9)
    np.testing.assert_allclose(boxed.get_forces(), forces, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize(
    "cell, match", [([[30.0, 0, 0], [0, 30, 0], [0, 0, 0]], "singular"), ([6.0, 30.0, 30.0], "own image")]
)
def test_periodic_systems_it_cannot_describe_are_refused(bundled_checkpoints, molecule, cell, match):
    atoms = molecule.copy()
    atoms.set_cell(cell)
    atoms.pbc = True
    atoms.calc = GeoPatraCalculator(bundled_checkpoints["geopatra"])
    with pytest.raises(PeriodicSystemError, match=match):
        atoms.get_potential_energy()


def test_unseen_element_is_refused(bundled_checkpoints, molecule):
    atoms = molecule.copy()
    atoms.numbers[0] = 26  # iron: never in the training data
    atoms.calc = GeoPatraCalculator(bundled_checkpoints["geopatra"])
    with pytest.raises(ElementError, match=r"26|Fe"):
        atoms.get_potential_energy()


@pytest.mark.parametrize(
    "change",
    [
        lambda a: a[:-1],  # one atom fewer
        lambda a: a[np.r_[1, 0, 2 : len(a)]] if a.numbers[0] != a.numbers[1] else a[np.r_[2, 1, 0, 3 : len(a)]],
        lambda a: Atoms(numbers=np.where(a.numbers == 1, 9, a.numbers), positions=a.positions),
    ],
    ids=["atom_count", "atom_order", "elements"],
)
def test_kernel_model_refuses_other_molecules(bundled_checkpoints, molecule, change):
    atoms = change(molecule.copy())
    atoms.calc = GeoPatraCalculator(bundled_checkpoints["sgdml"])
    with pytest.raises(IncompatibleMoleculeError):
        atoms.get_potential_energy()


def test_bad_checkpoint_files(tmp_path, bundled_checkpoints):
    with pytest.raises(CheckpointError, match="no such"):
        GeoPatraCalculator(tmp_path / "absent.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not torch")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        GeoPatraCalculator(junk)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a geopatra checkpoint"):
        GeoPatraCalculator(foreign)
    old = torch.load(bundled_checkpoints["sgdml"], weights_only=False)
    old[CHECKPOINT_KEY]["format_version"] = 0
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="format 0"):
        GeoPatraCalculator(tmp_path / "old.ckpt")
