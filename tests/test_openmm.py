"""geopatra models in OpenMM through openmm-ml (Reference platform, float64): the same energies and
forces as the ASE calculator, energy conservation in NVE, a committee, bad input, and the bundled
peptide in a periodic water box (ML/MM, mechanical embedding), split across the box edge."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units as ase_units
from nve_check import assert_conserves_energy

from geopatra import GeoPatraCalculator
from geopatra.data import read_dataset
from geopatra.errors import CheckpointError, IncompatibleMoleculeError
from geopatra.md import drift_report

openmm = pytest.importorskip("openmm")
pytest.importorskip("openmmml")
from openmm import unit  # noqa: E402
from openmmml import MLPotential  # noqa: E402

from geopatra.openmm_potential import demo_water_box, molecule_topology  # noqa: E402

pytestmark = pytest.mark.slow
KINDS = ["geopatra", "sgdml"]
KJ_MOL_PER_EV = ase_units.eV / (ase_units.kJ / ase_units.mol)


@pytest.fixture(scope="module")
def peptide():
    """(atomic numbers [42], positions [42, 3] Å) of a bundled frame."""
    dataset = read_dataset("bundled")
    return dataset.z, dataset.R[-1]


def context_of(system: openmm.System, positions_angstrom: np.ndarray, integrator=None) -> openmm.Context:
    integrator = integrator or openmm.VerletIntegrator(0.5 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_angstrom * 0.1 * unit.nanometer)
    return context


def energy_and_forces(context: openmm.Context, groups=-1) -> tuple[float, np.ndarray]:
    """kJ/mol and kJ/mol/nm."""
    state = context.getState(getEnergy=True, getForces=True, groups=groups)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


@pytest.mark.parametrize("kind", KINDS)
def test_energies_and_forces_equal_the_ase_calculator(bundled_checkpoints, peptide, kind) -> None:
    z, positions = peptide
    system = MLPotential("geopatra", checkpoint=str(bundled_checkpoints[kind]), dtype="float64").createSystem(
        molecule_topology(z)
    )
    context = context_of(system, positions)
    from ase import Atoms

    atoms = Atoms(numbers=z, positions=positions,
                  calculator=GeoPatraCalculator(bundled_checkpoints[kind], dtype="float64"))
    for shift in (0.0, 0.05):  # two geometries
        atoms.positions = positions + shift * np.sin(np.arange(3 * len(z))).reshape(-1, 3)
        context.setPositions(atoms.positions * 0.1 * unit.nanometer)
        energy, forces = energy_and_forces(context)
        expected_energy = atoms.get_potential_energy() * KJ_MOL_PER_EV
        expected_forces = atoms.get_forces() * KJ_MOL_PER_EV * 10.0  # eV/Å -> kJ/mol/nm
        assert energy == pytest.approx(expected_energy, rel=1e-5)
        np.testing.assert_allclose(forces, expected_forces, rtol=1e-5, atol=1e-5 * np.abs(expected_forces).max())


def test_a_committee_is_the_mean_of_its_members(bundled_checkpoints, peptide, tmp_path) -> None:
    import torch

    z, positions = peptide
    original = str(bundled_checkpoints["geopatra"])
    checkpoint = torch.load(original, map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(0)
    for name, tensor in checkpoint["state_dict"].items():  # a second member: other readout weights
        if "readout" in name and tensor.is_floating_point():
            tensor += 0.1 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    results = []
    for members in (original, str(other), [original, str(other)]):
        system = MLPotential("geopatra", checkpoint=members, dtype="float64").createSystem(molecule_topology(z))
        results.append(energy_and_forces(context_of(system, positions)))
    (e0, f0), (e1, f1), (e_mean, f_mean) = results
    assert abs(e0 - e1) > 1e-3  # kJ/mol: the members differ
    assert e_mean == pytest.approx((e0 + e1) / 2, rel=1e-12)
    np.testing.assert_allclose(f_mean, (f0 + f1) / 2, rtol=1e-12, atol=1e-9)
    with pytest.raises(CheckpointError, match="members must match"):
        MLPotential("geopatra", checkpoint=[original, str(bundled_checkpoints["sgdml"])])


def test_bad_input_is_refused(bundled_checkpoints, peptide, tmp_path) -> None:
    z, _ = peptide
    with pytest.raises(CheckpointError, match="checkpoint="):
        MLPotential("geopatra")
    with pytest.raises(IncompatibleMoleculeError):  # sGDML knows its atoms in the order it was trained on
        MLPotential("geopatra", checkpoint=str(bundled_checkpoints["sgdml"])).createSystem(molecule_topology(z[::-1]))
    not_a_checkpoint = tmp_path / "x.ckpt"
    not_a_checkpoint.write_text("no")
    with pytest.raises(CheckpointError):
        MLPotential("geopatra", checkpoint=str(not_a_checkpoint))


def test_nve_in_openmm_conserves_energy(bundled_checkpoints, peptide) -> None:
    z, positions = peptide
    system = MLPotential("geopatra", checkpoint=str(bundled_checkpoints["sgdml"])).createSystem(
        molecule_topology(z), removeCMMotion=False
    )
    span_fs = 100.0

    def excursion(timestep_fs: float) -> tuple[float, float]:
        context = context_of(system, positions, openmm.VerletIntegrator(timestep_fs * unit.femtosecond))
        context.setVelocitiesToTemperature(100 * unit.kelvin, 1)
        e_pot, e_kin = [], []
        for _ in range(int(round(span_fs / timestep_fs)) + 1):
            state = context.getState(getEnergy=True)
            e_pot.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV)
            e_kin.append(state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_MOL_PER_EV)
            context.getIntegrator().step(1)
        e_pot, e_kin = np.array(e_pot), np.array(e_kin)
        assert e_kin.max() > 0.01  # eV: the atoms move
        time_ps = np.arange(len(e_pot)) * timestep_fs / 1000
        _, drift_over_kinetic, _, _ = drift_report(time_ps, e_pot, e_kin, len(z))
        return float(np.abs(e_pot + e_kin - e_pot[0] - e_kin[0]).max()), drift_over_kinetic

    assert_conserves_energy(excursion)


def test_the_peptide_in_water_runs_and_is_evaluated_whole(bundled_checkpoints, peptide) -> None:
    z, positions = peptide
    topology, solvated_positions, mm_system = demo_water_box(z, positions)
    ml_atoms = list(range(len(z)))
    assert topology.getNumAtoms() > 3 * 100 + len(z)  # over a hundred waters
    mixed = MLPotential("geopatra", checkpoint=str(bundled_checkpoints["sgdml"]), dtype="float64").createMixedSystem(
        topology, mm_system, ml_atoms, forceGroup=1
    )
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 1 * unit.femtosecond)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(mixed, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(solvated_positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=50)
    integrator.step(200)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    # the ML energy is the vacuum energy of the whole molecule, wherever the box cuts it
    ml_energy, _ = energy_and_forces(context, groups={1})
    ml_positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[ml_atoms]
    vacuum = MLPotential("geopatra", checkpoint=str(bundled_checkpoints["sgdml"]), dtype="float64").createSystem(
        molecule_topology(z)
    )
    whole_energy, _ = energy_and_forces(context_of(vacuum, ml_positions))
    assert ml_energy == pytest.approx(whole_energy, rel=1e-9)
    box = np.diag(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom))
    everything = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    split = everything.copy()
    centre = int(np.argmin(np.linalg.norm(ml_positions - ml_positions.mean(axis=0), axis=1)))
    split[ml_atoms] -= split[centre] - 0.01  # its central atom at the corner: the peptide crosses every face
    split[ml_atoms] = np.mod(split[ml_atoms], box)  # ... and each atom is wrapped into the box alone
    assert np.ptp(split[ml_atoms] / box, axis=0).min() > 0.5
    context.setPositions(split * 0.1 * unit.nanometer)
    split_energy, _ = energy_and_forces(context, groups={1})
    assert split_energy == pytest.approx(whole_energy, rel=1e-9)
