"""ASE calculator for any geopatra checkpoint (GeoPaTra or sGDML), in eV and Å at the ASE boundary."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from geopatra.checkpoint import load_potential
from geopatra.errors import GeopatraError
from geopatra.models.forces import energy_and_forces
from geopatra.units import ASE_UNITS, Units


class PeriodicSystemError(GeopatraError, ValueError):
    """geopatra models describe isolated molecules; periodic cells are refused."""


class GeoPatraCalculator(Calculator):
    """Energy [eV], forces [eV/Å] (and per-atom energies [eV] where the model has them).

    Args:
        checkpoint_path: a ``.ckpt`` written by ``geopatra fit`` (the kind is read from its record).
        device: torch device for the model, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``"float32"``/``"float64"`` to cast the model; ``None`` keeps the trained dtype.
    """

    implemented_properties: ClassVar[list[str]] = ["energy", "free_energy", "forces", "energies"]

    def __init__(
        self,
        checkpoint_path: str | os.PathLike,
        device: str = "cpu",
        dtype: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = torch.device(device)
        potential, record = load_potential(checkpoint_path, map_location=self.device, dtype=dtype)
        self.potential = potential.to(self.device)
        self.record = record
        self.kind = record["kind"]
        model_units = Units(**record["units"])
        self.energy_to_ev = model_units.energy_factor_to(ASE_UNITS)
        self.force_to_ev_per_angstrom = model_units.force_factor_to(ASE_UNITS)
        self.length_from_angstrom = ASE_UNITS.length_factor_to(model_units)
        if not hasattr(self.potential, "per_atom_energy"):
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
        if atoms.pbc.any():
            raise PeriodicSystemError(
                f"Atoms with pbc={atoms.pbc.tolist()}: geopatra models describe isolated molecules; "
                "set atoms.pbc = False (a large vacuum box is not needed)."
            )
        numbers = atoms.get_atomic_numbers()
        if self._checked_numbers is not None and np.array_equal(numbers, self._checked_numbers):
            return
        z = torch.as_tensor(numbers, dtype=torch.long, device=self.device)
        self.potential.check_atoms(z)
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
        pos = torch.as_tensor(
            self.atoms.get_positions() * self.length_from_angstrom, dtype=self.dtype, device=self.device
        )
        energy, forces = energy_and_forces(self.potential, pos, self._z, self._batch, 1)
        self.results["energy"] = float(energy.sum().item()) * self.energy_to_ev
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = forces.double().cpu().numpy() * self.force_to_ev_per_angstrom
        per_atom = getattr(self.potential, "per_atom_energy", None)
        if per_atom is not None and "energies" in (properties or []):
            with torch.no_grad():
                energies = per_atom(pos, self._z, self._batch, 1)
            self.results["energies"] = energies.double().cpu().numpy() * self.energy_to_ev
