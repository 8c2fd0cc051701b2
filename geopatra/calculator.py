"""ASE calculator for any geopatra checkpoint (GeoPaTra or sGDML), or a committee of them, in eV and Å
at the ASE boundary."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from geopatra.checkpoint import load_potential
from geopatra.errors import CheckpointError, PeriodicSystemError  # noqa: F401 (re-exported)
from geopatra.models.forces import committee_energy_and_forces
from geopatra.models.inference import InferencePotential
from geopatra.periodic import make_whole
from geopatra.units import ASE_UNITS


class GeoPatraCalculator(Calculator):
    """Energy [eV], forces [eV/Å] (and per-atom energies [eV] where the model has them).

    Given several checkpoints (a committee, e.g. the same recipe trained with different seeds), energy
    and forces are the committee means, and ``results`` also holds their spread: ``energy_std`` [eV],
    ``forces_std`` [n_atoms, 3] eV/Å (standard deviations over the members) and ``max_force_std``
    [eV/Å], the largest per-atom spread |sigma_F_i|. A large spread says the geometry is far from the
    training data.

    Args:
        checkpoint_path: a ``.ckpt`` written by ``geopatra fit`` (the kind is read from its record),
            or a sequence of them.
        device: torch device for the model, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``/``"float64"`` to cast the model; ``None`` keeps the trained dtype.
        compile: ``torch.compile`` each model for repeated calls on one molecule (the first call
            compiles, tens of seconds; :class:`geopatra.models.inference.InferencePotential`).
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "energies"]

    def __init__(
        self,
        checkpoint_path: str | os.PathLike | Sequence[str | os.PathLike],
        device: str = "cpu",
        dtype: str | None = None,
        compile: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        paths = [checkpoint_path] if isinstance(checkpoint_path, (str, os.PathLike)) else list(checkpoint_path)
        if not paths:
            raise CheckpointError("GeoPatraCalculator: no checkpoint given")
        members = [load_potential(path, map_location=self.device, dtype=dtype) for path in paths]
        record = members[0][1]
        for path, (_, other) in zip(paths[1:], members[1:]):
            if other.units != record.units or other.kind != record.kind:
                raise CheckpointError(
                    f"{path}: a {other.kind} model in {other.units}; the committee's first member "
                    f"({paths[0]}) is a {record.kind} model in {record.units}: members must match"
                )
        self.members = [potential.to(self.device) for potential, _ in members]
        # frozen (and optionally compiled) views of the members, used for energies and forces
        self.evaluators = [InferencePotential(member, compile=compile) for member in self.members]
        self.potential = self.members[0]
        self.record = record
        self.kind = record.kind
        model_units = record.units
        self.energy_to_ev = model_units.energy_factor_to(ASE_UNITS)
        self.force_to_ev_per_angstrom = model_units.force_factor_to(ASE_UNITS)
        self.length_from_angstrom = ASE_UNITS.length_factor_to(model_units)
        if not self.potential.has_per_atom_energy:
            self.implemented_properties = ["energy", "free_energy", "forces"]  # type: ignore[misc]
        self._checked_numbers: np.ndarray | None = None
        self._z: torch.Tensor | None = None
        self._batch: torch.Tensor | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in."""
        return self.potential.compute_dtype

    def _check(self, atoms: Atoms) -> None:
        """Validate an ``Atoms`` once per change of its elements (not at every MD step)."""
        numbers = atoms.get_atomic_numbers()
        if self._checked_numbers is not None and np.array_equal(numbers, self._checked_numbers):
            return
        z = torch.as_tensor(numbers, dtype=torch.long, device=self.device)
        for member in self.members:
            member.check_atoms(z)
        self._checked_numbers = numbers.copy()
        self._z = z
        self._batch = torch.zeros(len(numbers), dtype=torch.long, device=self.device)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        self._check(self.atoms)
        positions = self.atoms.get_positions()
        if self.atoms.pbc.any():  # the model is not periodic: the molecule is made whole, then evaluated
            positions = make_whole(positions, self.atoms.numbers, self.atoms.cell.array, self.atoms.pbc)
        positions = positions * self.length_from_angstrom
        energies, forces = committee_energy_and_forces(self.evaluators, positions, self._z, self._batch)
        energies, forces = energies * self.energy_to_ev, forces * self.force_to_ev_per_angstrom
        self.results["energy"] = float(np.mean(energies))
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = np.mean(forces, axis=0)
        if len(self.members) > 1:
            self.results["energy_std"] = float(np.std(energies))
            self.results["forces_std"] = np.std(forces, axis=0)
            self.results["max_force_std"] = float(np.linalg.norm(self.results["forces_std"], axis=1).max())
        if self.potential.has_per_atom_energy and "energies" in (properties or []):
            pos = torch.as_tensor(positions, dtype=self.dtype, device=self.device)
            with torch.no_grad():
                atom_energies = [m.per_atom_energy(pos, self._z, self._batch, 1) for m in self.members]
            self.results["energies"] = torch.stack(atom_energies).mean(0).double().cpu().numpy() * self.energy_to_ev
