"""MD speed of geopatra checkpoints in OpenMM (through openmm-ml) and in ASE: the bundled peptide
(Ac-Ala3-NHMe, 42 atoms) in vacuum and in a TIP3P water box (ML/MM, mechanical embedding, the
peptide's MM parameters a placeholder: see ``geopatra.openmm_potential.demo_water_box``).

    python -m experiments.openmm_speed --checkpoint runs/demo/sgdml/checkpoints/last.ckpt \\
        runs/demo/geopatra/checkpoints/last.ckpt            # the checkpoints of `make demo`

Each run: a short warm-up, then ``--steps`` timed steps; OpenMM on its CPU platform with
``--threads`` threads, torch with the same. Reports steps/s and ns/day.
Writes ``experiments/results/openmm_md.{md,png,json}``.
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path

from experiments import layout, reporting


def openmm_rate(system, positions, timestep_fs: float, steps: int, threads: int, langevin: bool) -> float:
    """Steps per second of OpenMM MD on ``system``."""
    import openmm
    from openmm import unit

    if langevin:
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                     timestep_fs * unit.femtosecond)
    else:
        integrator = openmm.VerletIntegrator(timestep_fs * unit.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, maxIterations=50)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(10)  # warm-up
    start = time.perf_counter()
    integrator.step(steps)
    return steps / (time.perf_counter() - start)


def ase_rate(checkpoint: str, z, positions, timestep_fs: float, steps: int) -> float:
    from ase import Atoms

    from geopatra import GeoPatraCalculator
    from geopatra.md import run_md

    atoms = Atoms(numbers=z, positions=positions, calculator=GeoPatraCalculator(checkpoint))
    run_md(atoms, temperature=300.0, timestep_fs=timestep_fs, steps=10, progress=False)  # warm-up
    report, _ = run_md(atoms, temperature=300.0, timestep_fs=timestep_fs, steps=steps, progress=False)
    return report.steps_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", required=True, help="geopatra .ckpt files")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--box-nm", type=float, default=2.6)
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from openmm import unit
    from openmmml import MLPotential

    from geopatra.checkpoint import load_potential
    from geopatra.data import read_dataset
    from geopatra.openmm_potential import demo_water_box, molecule_topology

    torch.set_num_threads(args.threads)
    dataset = read_dataset("bundled")
    z, positions = dataset.z, dataset.R[-1]
    rows = []
    for checkpoint in args.checkpoint:
        kind = load_potential(checkpoint)[1].kind
        potential = MLPotential("geopatra", checkpoint=checkpoint)
        vacuum = potential.createSystem(molecule_topology(z))
        topology, water_positions, mm_system = demo_water_box(z, positions, box_nm=args.box_nm)
        mixed = potential.createMixedSystem(topology, mm_system, list(range(len(z))))
        water_atoms = topology.getNumAtoms() - len(z)
        runs = {
            "ASE, vacuum, NVE 0.5 fs": (0.5, partial(ase_rate, checkpoint, z, positions, 0.5, args.steps)),
            "OpenMM, vacuum, NVE 0.5 fs": (0.5, partial(openmm_rate, vacuum, positions * 0.1 * unit.nanometer, 0.5,
                                                        args.steps, args.threads, langevin=False)),
            f"OpenMM, {water_atoms} water atoms, Langevin 1 fs": (
                1.0, partial(openmm_rate, mixed, water_positions, 1.0, args.steps, args.threads, langevin=True)),
        }
        for engine, (timestep_fs, rate) in runs.items():
            steps_per_s = rate()
            rows.append({"model": kind, "checkpoint": checkpoint, "engine": engine, "steps_per_s": steps_per_s,
                         "ns_per_day": steps_per_s * timestep_fs * 1e-6 * 86_400, "threads": args.threads})
            print(f"{kind:9s} {engine:45s} {steps_per_s:8.1f} steps/s", flush=True)
    body = [f"Bundled Ac-Ala3-NHMe (42 atoms), {args.steps} timed steps after 10 warm-up steps, "
            f"{args.threads} thread(s) for OpenMM's CPU platform and for torch. Water box {args.box_nm} nm "
            "(TIP3P, cutoff 1 nm); the peptide's MM parameters are a placeholder (no charges, generic "
            "Lennard-Jones), so the ML/MM rows measure speed, not a physical solvation model.", "",
            "| model | engine | steps/s | ns/day |", "|---|---|---:|---:|"]
    body += [f"| {r['model']} | {r['engine']} | {r['steps_per_s']:.1f} | {r['ns_per_day']:.3f} |" for r in rows]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f"{r['model']}\n{r['engine']}" for r in rows]
    ax.barh(labels, [r["ns_per_day"] for r in rows])
    ax.set(xlabel="ns/day", xscale="log")
    fig.tight_layout()
    print(reporting.write_report("openmm_md", None, args.results_dir, "cpu", "MD speed in OpenMM and ASE", body, rows,
                                 fig))


if __name__ == "__main__":
    main()
