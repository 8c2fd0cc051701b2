"""Energy + forces and MD speed of any ASE calculator. Imports at module level are the
standard library and numpy only: the MACE and sgdml venvs import this module, and geopatra is not
installed there."""

from __future__ import annotations

import time

import numpy as np

#: MD used for the steps/s column: velocity Verlet, this time step [fs], Maxwell-Boltzmann start.
MD_TIMESTEP_FS, MD_TEMPERATURE_K = 0.5, 300.0

#: Untimed energy + forces calls before timing: MACE on CPU needs about three to settle (42 atoms:
#: 600, 510, 315, then 230 ms per call), geopatra and the reference sgdml one.
WARMUP_CALLS = 3


def time_calculator(atoms, calc, repeats: int, md_steps: int, sync=None) -> dict:
    """Time an ASE calculator on one structure: energy + forces per call [s] (median of ``repeats``
    after ``WARMUP_CALLS`` untimed calls, the calculator's cache bypassed) and velocity-Verlet MD
    steps/s over ``md_steps`` steps (after 2 warm-up steps). ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before each clock read. Works in every venv: ASE and
    numpy only."""
    from ase import units
    from ase.calculators.calculator import all_changes
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    sync = sync or (lambda: None)
    atoms = atoms.copy()
    atoms.pbc = False
    atoms.calc = calc
    for _ in range(WARMUP_CALLS):
        calc.calculate(atoms, ["energy", "forces"], all_changes)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        calc.calculate(atoms, ["energy", "forces"], all_changes)
        sync()
        times.append(time.perf_counter() - start)
    MaxwellBoltzmannDistribution(atoms, temperature_K=MD_TEMPERATURE_K, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=MD_TIMESTEP_FS * units.fs)
    dyn.run(2)
    sync()
    start = time.perf_counter()
    dyn.run(md_steps)
    sync()
    md_wall = time.perf_counter() - start
    return {"n_atoms": len(atoms), "ef_s": float(np.median(times)), "ef_min_s": float(np.min(times)),
            "md_steps_per_s": md_steps / md_wall, "repeats": repeats, "md_steps": md_steps,
            "warmup_calls": WARMUP_CALLS}
