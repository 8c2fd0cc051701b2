"""Units: one table of accepted unit strings, converted through ``ase.units``.

geopatra works internally in the sGDML convention: positions in Å, energies in kcal/mol, forces in
kcal/mol/Å. Readers convert to it; the ASE calculator converts from it to eV and Å.
"""

from __future__ import annotations

from dataclasses import dataclass

from ase import units as ase_units

from geopatra.errors import UnitError

#: Length units accepted in files and configs -> size of one unit in Å.
LENGTH_UNITS: dict[str, float] = {
    "Ang": 1.0,
    "Angstrom": 1.0,
    "A": 1.0,
    "Å": 1.0,
    "ang": 1.0,
    "angstrom": 1.0,
    "bohr": ase_units.Bohr,
    "Bohr": ase_units.Bohr,
    "au": ase_units.Bohr,
    "nm": 10.0,
}

#: Energy units accepted in files and configs -> size of one unit in eV.
ENERGY_UNITS: dict[str, float] = {
    "kcal/mol": ase_units.kcal / ase_units.mol,
    "kJ/mol": ase_units.kJ / ase_units.mol,
    "eV": 1.0,
    "meV": 1e-3,
    "Ha": ase_units.Hartree,
    "Hartree": ase_units.Hartree,
    "hartree": ase_units.Hartree,
    "au": ase_units.Hartree,
}


def length_in_angstrom(unit: str) -> float:
    """Size of one ``unit`` of length in Å; raises :class:`UnitError` for unknown strings."""
    try:
        return LENGTH_UNITS[unit]
    except KeyError:
        raise UnitError(
            f"unknown length unit {unit!r}; expected one of {sorted(LENGTH_UNITS)}"
        ) from None


def energy_in_ev(unit: str) -> float:
    """Size of one ``unit`` of energy in eV; raises :class:`UnitError` for unknown strings."""
    try:
        return ENERGY_UNITS[unit]
    except KeyError:
        raise UnitError(
            f"unknown energy unit {unit!r}; expected one of {sorted(ENERGY_UNITS)}"
        ) from None


@dataclass(frozen=True)
class Units:
    """A pair of length and energy units, validated on construction (forces are energy/length)."""

    length: str = "Ang"
    energy: str = "kcal/mol"

    def __post_init__(self) -> None:
        length_in_angstrom(self.length)
        energy_in_ev(self.energy)

    @property
    def force(self) -> str:
        return f"{self.energy}/{self.length}"

    def length_factor_to(self, other: Units) -> float:
        """Multiply a length in ``self`` units by this to get ``other`` units."""
        return length_in_angstrom(self.length) / length_in_angstrom(other.length)

    def energy_factor_to(self, other: Units) -> float:
        """Multiply an energy in ``self`` units by this to get ``other`` units."""
        return energy_in_ev(self.energy) / energy_in_ev(other.energy)

    def force_factor_to(self, other: Units) -> float:
        """Multiply a force in ``self`` units by this to get ``other`` units."""
        return self.energy_factor_to(other) / self.length_factor_to(other)

    def as_dict(self) -> dict[str, str]:
        return {"length": self.length, "energy": self.energy}


#: The internal convention (sGDML, MD17, MD22): Å and kcal/mol.
SGDML_UNITS = Units("Ang", "kcal/mol")
#: The ASE convention: Å and eV.
ASE_UNITS = Units("Ang", "eV")
#: OpenMM's units: nm, kJ/mol (forces kJ/mol/nm).
OPENMM_UNITS = Units("nm", "kJ/mol")
#: eV -> kcal/mol (and eV/Å -> kcal/mol/Å): from ASE's units to geopatra's.
EV_TO_KCAL_MOL = ASE_UNITS.energy_factor_to(SGDML_UNITS)
