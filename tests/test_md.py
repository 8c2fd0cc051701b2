"""Energy conservation in short NVE runs (the criterion: ``nve_check.py``), and a proof that the
check catches non-conservative forces."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from nve_check import assert_conserves_energy

from geopatra import GeoPatraCalculator
from geopatra.data import read_dataset
from geopatra.md import run_md

pytestmark = pytest.mark.slow

SPAN_FS = 100.0


def _excursion(calc, atoms: Atoms, timestep_fs: float) -> tuple[float, float]:
    """max |E_tot - E_tot(0)| [meV/atom] and drift/σ(E_kin) over SPAN_FS of NVE from 100 K."""
    atoms = atoms.copy()
    atoms.calc = calc
    report, series = run_md(
        atoms, ensemble="nve", temperature=100.0, timestep_fs=timestep_fs,
        steps=int(round(SPAN_FS / timestep_fs)), seed=1, progress=False,
    )
    assert not report.exploded, report.reason
    e_tot = (series["e_pot"] + series["e_kin"]) / len(atoms) * 1e3
    return float(np.abs(e_tot - e_tot[0]).max()), report.drift_over_kinetic_fluctuation


def assert_ase_run_conserves_energy(calc, atoms: Atoms) -> None:
    assert_conserves_energy(lambda timestep_fs: _excursion(calc, atoms, timestep_fs))


class SwirlCalculator(Calculator):
    """Wraps a calculator and adds a small rotational force about the z axis: not a gradient."""

    implemented_properties = ("energy", "forces")

    def __init__(self, inner: Calculator, strength: float = 0.05) -> None:
        super().__init__()
        self.inner, self.strength = inner, strength

    def calculate(self, atoms=None, properties=None, system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        probe = self.atoms.copy()
        probe.calc = self.inner
        centred = probe.positions - probe.positions.mean(axis=0)
        swirl = self.strength * np.stack([-centred[:, 1], centred[:, 0], np.zeros(len(probe))], 1)
        self.results = {"energy": probe.get_potential_energy(), "forces": probe.get_forces() + swirl}


@pytest.fixture(scope="module")
def start() -> Atoms:
    ds = read_dataset("bundled")
    return Atoms(numbers=ds.z, positions=ds.R[-1])


@pytest.mark.parametrize("kind", ["geopatra", "sgdml"])
def test_nve_conserves_energy(bundled_checkpoints, start, kind):
    calc = GeoPatraCalculator(bundled_checkpoints[kind], dtype="float64")
    atoms = start.copy()
    atoms.calc = calc
    # a model with real forces, so that the check is not trivially met by free flight
    assert np.abs(atoms.get_forces()).max() > 0.1  # eV/Å
    assert_ase_run_conserves_energy(calc, start)


def test_the_check_fails_for_non_conservative_forces(bundled_checkpoints, start):
    calc = SwirlCalculator(GeoPatraCalculator(bundled_checkpoints["sgdml"]))
    with pytest.raises(AssertionError, match=r"E_tot excursion|drift"):  # not an explosion
        assert_ase_run_conserves_energy(calc, start)
