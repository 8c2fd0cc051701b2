"""Reference ASE calculators for labelling, by short name, with their level-of-theory string."""

from __future__ import annotations

from importlib import metadata
from typing import Literal

from ase.calculators.calculator import Calculator, all_changes

from geopatra.labeling.structures import import_optional

CalculatorName = Literal["gfn2", "gfn1"]

#: Short name -> tblite method name.
TBLITE_METHODS: dict[str, str] = {"gfn2": "GFN2-xTB", "gfn1": "GFN1-xTB"}


def reference_calculator(
    name: CalculatorName = "gfn2", charge: int = 0, multiplicity: int = 1
) -> tuple[Calculator, str]:
    """A tblite calculator for ``name`` and its theory string, e.g. ``"GFN2-xTB (tblite 0.8.0)"``
    (``", charge +1"`` and ``", multiplicity 2"`` appended when not 0 and 1).

    ``charge``: net charge [e] of the molecule; ``multiplicity``: 2S + 1.

    The calculator is stateless between geometries: tblite's ASE calculator starts each SCF from the
    previous wavefunction, so its results depend (at the SCF tolerance, ~1e-5 kcal/mol) on the
    history; here every single point starts from the same initial guess, so results depend on the
    positions only and an MD trajectory resumed from a checkpoint is bitwise identical to an
    uninterrupted one.

    Raises:
        ValueError: unknown ``name``, or a multiplicity below 1.
        ImportError: tblite is not installed (names the ``label`` extra).
    """
    if name not in TBLITE_METHODS:
        raise ValueError(f"unknown calculator {name!r}; expected one of {sorted(TBLITE_METHODS)}")
    if multiplicity < 1:
        raise ValueError(f"multiplicity {multiplicity}; expected 2S + 1 >= 1")
    tblite_ase = import_optional("tblite.ase")
    method = TBLITE_METHODS[name]
    calc = _stateless(tblite_ase.TBLite)(method=method, charge=charge, multiplicity=multiplicity, verbosity=0)
    try:
        version = metadata.version("tblite")
    except metadata.PackageNotFoundError:  # pragma: no cover - installed without metadata
        version = "unknown version"
    extra = f", charge {charge:+d}" if charge else ""
    extra += f", multiplicity {multiplicity}" if multiplicity != 1 else ""
    return calc, f"{method} (tblite {version}){extra}"


def _stateless(tblite_class: type) -> type:
    """Subclass of tblite's ASE calculator that drops the SCF restart before every single point."""

    class StatelessTBLite(tblite_class):
        def calculate(self, atoms=None, properties=None, system_changes=all_changes) -> None:
            self._res = None  # no wavefunction restart: results depend on positions only
            self._xtb = None
            super().calculate(atoms, properties, system_changes)

    return StatelessTBLite
