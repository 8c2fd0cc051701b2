"""geopatra models in OpenMM through openmm-ml: ``MLPotential('geopatra', checkpoint=...)``.

    from openmmml import MLPotential
    potential = MLPotential("geopatra", checkpoint="runs/geopatra/checkpoints/last.ckpt")
    system = potential.createSystem(topology)                          # the molecule in vacuum
    system = potential.createMixedSystem(topology, mm_system, ml_atoms)  # ML/MM: the molecule in water

Registered under openmm-ml's ``openmmml.potentials`` entry point (``pip install geopatra[openmm]``;
the entry point is :mod:`geopatra.openmm_entry`).
Any geopatra checkpoint (GeoPaTra or sGDML) works; a committee is a list of checkpoints (the mean is
used). The model is evaluated by an ``openmm.PythonForce`` on the ML atoms only, in their topology
order, which must be the model's for an sGDML model (checked: a mismatch is an
``IncompatibleMoleculeError``). Units are converted at the boundary: OpenMM's nm and kJ/mol, geopatra's
Å and kcal/mol. In a periodic box the molecule is made whole before it is evaluated
(:func:`geopatra.periodic.make_whole`): the model itself is not periodic.

Arguments of ``MLPotential('geopatra', ...)``: ``checkpoint`` (path or list of paths), ``device``
("cpu", "cuda"), ``dtype`` ("float32"/"float64"; default: as trained).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence

import numpy as np
import openmm
import torch
from openmm import app, unit
from openmmml.mlpotential import MLPotentialImpl

from geopatra.checkpoint import load_potential
from geopatra.errors import CheckpointError
from geopatra.models.forces import committee_energy_and_forces
from geopatra.periodic import make_whole
from geopatra.units import ASE_UNITS, OPENMM_UNITS, Units


def create_impl(
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    device: str = "cpu",
    dtype: str | None = None,
) -> GeoPatraPotentialImpl:
    """The implementation behind ``MLPotential('geopatra', ...)`` (see the module docstring)."""
    if checkpoint is None:
        raise CheckpointError("MLPotential('geopatra') needs checkpoint=<a geopatra .ckpt file or a list of them>")
    return GeoPatraPotentialImpl(checkpoint, device=device, dtype=dtype)


class GeoPatraPotentialImpl(MLPotentialImpl):
    """Adds one ``PythonForce`` evaluating the geopatra model(s) on the ML atoms."""

    def __init__(
        self,
        checkpoint: str | os.PathLike | Sequence[str | os.PathLike],
        device: str = "cpu",
        dtype: str | None = None,
    ) -> None:
        paths = [checkpoint] if isinstance(checkpoint, (str, os.PathLike)) else list(checkpoint)
        if not paths:
            raise CheckpointError("MLPotential('geopatra'): no checkpoint given")
        self.device = torch.device(device)
        loaded = [load_potential(path, map_location=self.device, dtype=dtype) for path in paths]
        first = loaded[0][1]
        self.units = first.units
        for path, (_, record) in zip(paths, loaded):
            if record.units != first.units or record.kind != first.kind:
                raise CheckpointError(
                    f"{path}: a {record.kind} model in {record.units}; the committee's first member is a "
                    f"{first.kind} model in {first.units}: members must match"
                )
        self.members = [potential.to(self.device) for potential, _ in loaded]

    def addForces(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,
        **args,
    ) -> None:
        included = list(topology.atoms())
        if atoms is not None:
            atoms = list(atoms)
            included = [included[i] for i in atoms]
        if any(atom.element is None for atom in included):
            raise ValueError("every ML atom of the Topology needs an element")
        z = np.array([atom.element.atomic_number for atom in included])
        periodic = topology.getPeriodicBoxVectors() is not None
        force = openmm.PythonForce(MoleculeEnergy(self.members, self.units, z, self.device, periodic))
        force.setForceGroup(forceGroup)
        force.setUsesPeriodicBoundaryConditions(periodic)
        if atoms is not None:
            force.setParticles(atoms)
        system.addForce(force)

    def getMLLongRange(self) -> bool:
        """Global within the molecule, nothing beyond it: no interaction with periodic images."""
        return False


class MoleculeEnergy:
    """The ``PythonForce`` computation: an OpenMM ``State`` of the ML atoms -> (energy kJ/mol,
    forces [n_atoms, 3] kJ/mol/nm), the mean over the committee ``members`` (models in ``units``)."""

    def __init__(self, members: list, units: Units, z: np.ndarray, device: torch.device, periodic: bool) -> None:
        self.members, self.z, self.device, self.periodic = members, z, device, periodic
        self.energy_factor = units.energy_factor_to(OPENMM_UNITS)
        self.force_factor = units.force_factor_to(OPENMM_UNITS)
        self.length_factor = ASE_UNITS.length_factor_to(units)  # Å -> the model's length unit
        self._z = torch.as_tensor(z, dtype=torch.long, device=device)
        for member in members:
            member.check_atoms(self._z)
        self._batch = torch.zeros(len(z), dtype=torch.long, device=device)

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        if self.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom)
            positions = make_whole(positions, self.z, box, np.ones(3, dtype=bool))
        energies, forces = committee_energy_and_forces(self.members, positions * self.length_factor, self._z,
                                                       self._batch)
        return float(energies.mean()) * self.energy_factor, forces.mean(axis=0) * self.force_factor


def molecule_topology(z: Sequence[int]) -> app.Topology:
    """An OpenMM topology of one molecule: one chain, one residue ``MOL``, atoms named by element and
    index, no bonds (the ML model needs none)."""
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for k, number in enumerate(z):
        element = app.Element.getByAtomicNumber(int(number))
        topology.addAtom(f"{element.symbol}{k}", element, residue)
    return topology


def demo_water_box(
    z: Sequence[int], positions: np.ndarray, box_nm: float = 2.6, cutoff_nm: float = 1.0
) -> tuple[app.Topology, list, openmm.System]:
    """A molecule (atomic numbers ``z``, positions [n_atoms, 3] Å) in a cubic TIP3P water box, for
    demonstrations and tests of ML/MM: (topology, positions, MM system). The molecule is atoms 0..n-1.

    Its MM parameters are a placeholder, not a force field: no charges and one generic Lennard-Jones
    type per element (σ 0.3 nm, ε 0.4 kJ/mol), so that water keeps its distance. For real ML/MM give
    the molecule proper nonbonded parameters (e.g. from openmmforcefields) in the MM system.
    """
    elements = [app.Element.getByAtomicNumber(int(n)) for n in z]
    symbols = sorted({e.symbol for e in elements})
    types = "".join(f'<Type name="mol-{s}" class="mol-{s}" element="{s}" '
                    f'mass="{app.Element.getBySymbol(s).mass.value_in_unit(unit.dalton)}"/>' for s in symbols)
    atoms = "".join(f'<Atom name="{e.symbol}{k}" type="mol-{e.symbol}"/>' for k, e in enumerate(elements))
    lennard_jones = "".join(f'<Atom type="mol-{s}" charge="0" sigma="0.3" epsilon="0.4"/>' for s in symbols)
    xml = (f'<ForceField><AtomTypes>{types}</AtomTypes><Residues><Residue name="MOL">{atoms}</Residue>'
           f'</Residues><NonbondedForce coulomb14scale="0.833333" lj14scale="0.5">{lennard_jones}'
           "</NonbondedForce></ForceField>")
    forcefield = app.ForceField("tip3p.xml", io.StringIO(xml))
    modeller = app.Modeller(molecule_topology(z), np.asarray(positions) * 0.1 * unit.nanometer)
    modeller.addSolvent(forcefield, model="tip3p", boxSize=openmm.Vec3(box_nm, box_nm, box_nm) * unit.nanometer)
    mm_system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.CutoffPeriodic,
                                        nonbondedCutoff=cutoff_nm * unit.nanometer)
    return modeller.topology, modeller.getPositions(), mm_system
