"""The MD report's numbers and verdicts: the drift of a known trajectory through the code that writes
report.json, and the 'exploded' / 'unphysical' / 'ok' verdicts on small synthetic potentials."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.morse import MorsePotential

from geopatra.md import EXIT_STATUS, run_md, summarise, write_outputs
from geopatra.md_health import (
    MAX_FORCE_EV_PER_ANGSTROM,
    MAX_TEMPERATURE_CHANGE_K,
    Contact,
    closest_contact,
    contact_bounds,
    unphysical_reasons,
)


def synthetic_series(n_atoms: int, slope_mev_per_atom_ps: float, rng) -> dict[str, np.ndarray]:
    """1 ps at 0.5 fs: E_tot per atom = slope * t + noise (1e-4 meV/atom); E_kin oscillates."""
    t = np.arange(2001) * 0.5e-3  # ps
    e_kin = n_atoms * 0.03 * (1.0 + 0.2 * np.sin(2 * np.pi * t / 0.05))  # eV
    e_tot = n_atoms * 1e-3 * (slope_mev_per_atom_ps * t + 1e-4 * rng.standard_normal(t.size))  # eV
    return {"time_ps": t, "e_pot": e_tot - e_kin - 42.0, "e_kin": e_kin, "max_force": np.full(t.size, 1.0),
            "d_min": np.full(t.size, 1.0), "contact_ratio": np.full(t.size, 1.5)}


@pytest.mark.parametrize("n_atoms", [9, 42])
def test_reported_drift_of_a_known_trajectory(tmp_path, n_atoms) -> None:
    rng = np.random.default_rng(0)
    slope = 0.37  # meV/atom/ps
    series = synthetic_series(n_atoms, slope, rng)
    z = np.full(n_atoms, 6)
    report = summarise(series, z, 0.5, 2000, "nve", Contact(1.5, 1.5, 0, 1, 1.5))
    write_outputs(report, series, tmp_path)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["drift_mev_per_atom_ps"] == pytest.approx(slope, rel=1e-3)
    # per-atom normalisation: the same total-energy trend spread over twice the atoms halves the drift
    doubled = summarise(series, np.full(2 * n_atoms, 6), 0.5, 2000, "nve", Contact(1.5, 1.5, 0, 1, 1.5))
    assert doubled.drift_mev_per_atom_ps == pytest.approx(slope / 2, rel=1e-3)
    assert written["status"] == "ok" and written["unphysical"] == []


def test_contact_bounds_follow_covalent_radii() -> None:
    bounds = contact_bounds(np.array([6, 1, 1]))
    assert bounds[0, 1] == pytest.approx(0.75 * (0.76 + 0.31))
    assert bounds[1, 2] == pytest.approx(0.75 * 2 * 0.31)
    contact = closest_contact(np.array([[0.0, 0, 0], [0.7, 0, 0], [3.0, 0, 0]]), bounds)
    assert (contact.i, contact.j) == (0, 1) and contact.ratio == pytest.approx(0.7 / bounds[0, 1])
    assert contact.min_distance == pytest.approx(0.7)
    # the pair furthest below its bound (C-H at 0.75 Å) need not be the closest pair (H-H at 0.45 Å)
    contact = closest_contact(np.array([[0.0, 0, 0], [0.75, 0, 0], [1.2, 0, 0]]), bounds)
    assert (contact.i, contact.j) == (0, 1) and contact.min_distance == pytest.approx(0.45)


def test_each_unphysical_reason_alone() -> None:
    z = np.array([6, 1])
    fine = Contact(1.2, 1.1, 0, 1, 1.1)
    steady = np.full(100, 300.0)
    assert unphysical_reasons(z, fine, steady, 2.0, "nve") == []
    (reason,) = unphysical_reasons(z, Contact(0.9, 0.72, 0, 1, 0.72), steady, 2.0, "nve")
    assert "0.72 Å" in reason and "(C)" in reason and "(H)" in reason
    heated = np.concatenate([np.full(50, 300.0), np.full(50, 300.0 + MAX_TEMPERATURE_CHANGE_K + 10)])
    (reason,) = unphysical_reasons(z, fine, heated, 2.0, "nve")
    assert "temperature" in reason
    assert unphysical_reasons(z, fine, heated, 2.0, "langevin") == []  # a thermostat sets T itself
    (reason,) = unphysical_reasons(z, fine, steady, MAX_FORCE_EV_PER_ANGSTROM + 1, "nve")
    assert "force" in reason


def _ch_pair(r: float, epsilon: float, r0: float, rho0: float) -> Atoms:
    atoms = Atoms("CH", positions=[[0, 0, 0], [r, 0, 0]])
    atoms.calc = MorsePotential(epsilon=epsilon, r0=r0, rho0=rho0)
    return atoms


def test_healthy_bond_is_ok(tmp_path) -> None:
    atoms = _ch_pair(1.09, epsilon=4.0, r0=1.09, rho0=2.18)
    report, _ = run_md(atoms, temperature=300.0, steps=400, progress=False, output=tmp_path)
    assert report.status == "ok" and not report.exploded and not report.unphysical
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["status"] == "ok"
    # the speed: 400 steps of 0.5 fs in wall_s seconds
    assert written["wall_s"] > 0 and written["steps_per_s"] == pytest.approx(400 / written["wall_s"])
    assert written["ns_per_day"] == pytest.approx(written["steps_per_s"] * 0.5e-6 * 86_400)


def test_a_hole_in_the_surface_is_unphysical_not_exploded() -> None:
    """A C-H 'bond' whose minimum sits at 0.7 Å (below the 0.80 Å bound): started at 1.09 Å, the atoms
    fall into the hole and oscillate between about 0.55 and 1.09 Å, energy conserved."""
    atoms = _ch_pair(1.09, epsilon=2.0, r0=0.7, rho0=2.8)
    report, _ = run_md(atoms, temperature=50.0, steps=400, progress=False)
    assert report.status == "unphysical" and not report.exploded
    assert any("apart" in r for r in report.unphysical) and any("temperature" in r for r in report.unphysical)
    assert report.min_distance_angstrom > 0.5


def test_collapse_below_half_an_angstrom_is_exploded() -> None:
    atoms = _ch_pair(1.09, epsilon=2.0, r0=0.6, rho0=1.8)
    report, _ = run_md(atoms, temperature=50.0, steps=400, progress=False)
    assert report.status == "exploded" and report.exploded and "apart" in report.reason
    assert report.unphysical == []


def test_exit_statuses_are_distinct() -> None:
    assert EXIT_STATUS["ok"] == 0
    assert len(set(EXIT_STATUS.values())) == 3 and all(v in (0, 3, 4) for v in EXIT_STATUS.values())
