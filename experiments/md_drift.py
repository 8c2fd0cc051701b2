"""Energy drift of NVE dynamics driven by the demo checkpoints (issue: ASE calculator and MD).

    python -m experiments.md_drift [--ps 10] [--timestep 0.5] [--runs runs/demo]
    python -m experiments.md_drift --model geopatra=PATH.ckpt --model sgdml=PATH.ckpt --name md_drift_large

Runs NVE (velocity Verlet, 300 K initial Maxwell–Boltzmann velocities, seed 0) from the first test
frame of each demo model's split, and writes experiments/results/md_drift.md and md_drift.png.
Needs `make demo` (or the two demo fits) first. Goal: |drift| < 0.1 meV/atom/ps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from geopatra import GeoPatraCalculator
from geopatra.md import run_md

ROOT = Path(__file__).resolve().parents[1]


def parse_models(specs: list[str] | None, runs: Path) -> list[tuple[str, Path]]:
    """``NAME=CHECKPOINT`` pairs, default: the two demo runs under ``runs``."""
    if not specs:
        return [(kind, runs / kind / "checkpoints" / "last.ckpt") for kind in ("sgdml", "geopatra")]
    pairs = []
    for spec in specs:
        name, sep, path = spec.rpartition("=")  # names may hold "=", paths rarely do
        if not sep:
            raise SystemExit(f"--model expects NAME=CHECKPOINT, got {spec!r}")
        pairs.append((name, Path(path)))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ps", type=float, default=10.0, help="simulated time [ps]")
    parser.add_argument("--timestep", type=float, default=0.5, help="[fs]")
    parser.add_argument("--temperature", type=float, default=300.0, help="initial Maxwell–Boltzmann [K]")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs/demo")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=CHECKPOINT",
        help="a checkpoint to run (repeatable); default: the demo runs under --runs",
    )
    parser.add_argument("--dtype", default="float64", help="model dtype during MD")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/results")
    parser.add_argument("--name", default="md_drift", help="report file stem")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.provenance import provenance_lines

    steps = int(round(args.ps * 1000 / args.timestep))
    rows, series_by_name = [], {}
    for name, checkpoint in parse_models(args.model, args.runs):
        calc = GeoPatraCalculator(checkpoint, device=args.device, dtype=args.dtype)
        z, positions = calc.record.starting_frame("test")
        atoms = Atoms(numbers=z, positions=positions)
        atoms.calc = calc
        start = time.perf_counter()
        report, series = run_md(
            atoms,
            ensemble="nve",
            temperature=args.temperature,
            timestep_fs=args.timestep,
            steps=steps,
            log_every=10,
            seed=0,
        )
        seconds = time.perf_counter() - start
        series_by_name[name] = series
        rows.append((name, checkpoint, report, seconds))
        print(
            f"{name}: drift {report.drift_mev_per_atom_ps:+.5f} meV/atom/ps, "
            f"{report.steps / seconds:.1f} steps/s, exploded={report.exploded}"
        )

    args.out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, series in series_by_name.items():
        n = len(atoms)
        e_tot = (series["e_pot"] + series["e_kin"]) / n * 1e3
        ax.plot(series["time_ps"], e_tot - e_tot[0], lw=0.8, label=name)
    ax.set_xlabel("time [ps]")
    ax.set_ylabel("E_tot − E_tot(0) [meV/atom]")
    ax.set_title(f"NVE, {args.timestep} fs, {args.temperature:g} K start, {len(atoms)} atoms ({args.dtype})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}.png", dpi=120)

    lines = [
        "# NVE energy drift",
        "",
        *provenance_lines(args.device),
        f"Setup: velocity Verlet, {args.timestep} fs, {steps} steps ({args.ps} ps), Maxwell–Boltzmann "
        f"{args.temperature:g} K (seed 0), first test frame of each run's split, model in "
        f"{args.dtype}. Drift = slope of a linear fit of E_tot(t). Goal: |drift| < 0.1 meV/atom/ps.",
        "",
        "| model | checkpoint | simulated [ps] | exploded | drift [meV/atom/ps] | σ(E_tot) [meV/atom] | "
        "σ(E_kin) [meV/atom] | max abs F [eV/Å] | min distance [Å] | mean T [K] | steps/s | goal met |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, checkpoint, r, seconds in rows:
        lines.append(
            f"| {name} | `{checkpoint}` | {r.steps * args.timestep / 1000:.2f} | {r.reason or 'no'} | "
            f"{r.drift_mev_per_atom_ps:+.5f} | {r.total_energy_std_mev_per_atom:.4f} | "
            f"{r.kinetic_energy_std_mev_per_atom:.3f} | {r.max_force_ev_per_angstrom:.2f} | "
            f"{r.min_distance_angstrom:.3f} | {r.mean_temperature_k:.0f} | {r.steps / seconds:.1f} | "
            f"{'yes' if abs(r.drift_mev_per_atom_ps) < 0.1 and not r.exploded else 'no'} |"
        )
    lines += ["", f"![drift]({args.name}.png)", ""]
    (args.out / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
