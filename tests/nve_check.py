"""The energy-conservation criterion of short NVE runs, shared by every engine's test.

Velocity Verlet is symplectic and second order: for conservative forces the total energy oscillates
with an amplitude that scales as dt² and shows no secular drift. So halving the time step over the
same simulated time must shrink the total-energy excursion about four-fold (we require < 0.35,
allowing for higher-order terms), and the drift rate must stay below 10 % of the kinetic-energy
fluctuation over the run. A force that is not -dE/dR breaks both: its work is not a potential
difference, so E_tot wanders by an amount that does not shrink with dt.
"""

from __future__ import annotations

from collections.abc import Callable

#: time steps [fs] of the two runs compared
COARSE_FS, FINE_FS = 0.5, 0.25


def assert_conserves_energy(excursion: Callable[[float], tuple[float, float]]) -> None:
    """``excursion(dt_fs)`` runs NVE over a fixed span with time step ``dt_fs`` from the same start and
    returns (max |E_tot - E_tot(0)| [any energy unit], drift of E_tot / std of E_kin)."""
    coarse, drift_coarse = excursion(COARSE_FS)
    fine, drift_fine = excursion(FINE_FS)
    assert fine / coarse < 0.35, f"E_tot excursion {coarse:.4g} -> {fine:.4g} when dt halves"
    assert drift_coarse < 0.1 and drift_fine < 0.1, f"drift/σ(E_kin) {drift_coarse:.3g}, {drift_fine:.3g}"
