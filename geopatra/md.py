"""Molecular dynamics with a geopatra checkpoint through ASE, with an energy-conservation report.

    geopatra md --checkpoint RUN/checkpoints/last.ckpt --from-split test --ensemble nve \
        --temperature 300 --timestep 0.5 --steps 2000 --output RUN/md

Exit status: 0 a healthy run; 3 the run exploded (stopped early); 4 the run finished but is
unphysical (the model left its training data: see :mod:`geopatra.md_health` for the bounds).
``report.json`` says which (``status``) and why (``reason``, ``unphysical``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
from ase.md.verlet import VelocityVerlet
from tqdm.auto import tqdm

from geopatra.md_health import (
    MAX_ENERGY_CHANGE_EV_PER_ATOM,
    MIN_DISTANCE_ANGSTROM,
    Contact,
    closest_contact,
    contact_bounds,
    unphysical_reasons,
)
from geopatra.periodic import make_whole
from geopatra.run_record import RunRecord

logger = logging.getLogger(__name__)

#: Exit status of ``geopatra md`` per run status.
EXIT_STATUS = {"ok": 0, "exploded": 3, "unphysical": 4}


@dataclass
class MDReport:
    """Summary of a trajectory; energies in eV, times in ps, drift in meV/atom/ps.

    ``status`` is "ok", "exploded" (``reason`` says why) or "unphysical" (``unphysical`` lists why).
    """

    steps: int
    timestep_fs: float
    n_atoms: int
    drift_mev_per_atom_ps: float
    drift_over_kinetic_fluctuation: float
    total_energy_std_mev_per_atom: float
    kinetic_energy_std_mev_per_atom: float
    max_force_ev_per_angstrom: float
    min_distance_angstrom: float
    mean_temperature_k: float
    exploded: bool
    reason: str = ""
    start_temperature_k: float = math.nan
    closest_contact_ratio: float = math.nan
    status: str = "ok"
    unphysical: list[str] = field(default_factory=list)
    max_force_spread_ev_per_angstrom: float | None = None  # committees only
    wall_s: float = math.nan  # wall time of the run, logging included
    steps_per_s: float = math.nan
    ns_per_day: float = math.nan  # simulated time per day of wall time at this speed


def drift_report(
    time_ps: np.ndarray, e_pot: np.ndarray, e_kin: np.ndarray, n_atoms: int, ensemble: str = "nve"
) -> tuple[float, float, float, float]:
    """Linear-fit drift of E_tot [meV/atom/ps], |drift over the run| / std(E_kin), std(E_tot) and
    std(E_kin) [meV/atom]. Energies in eV."""
    e_tot = (e_pot + e_kin) / n_atoms * 1e3
    slope = float(np.polyfit(time_ps, e_tot, 1)[0]) if len(time_ps) > 1 else 0.0
    kin_std = float(np.std(e_kin / n_atoms * 1e3))
    duration = float(time_ps[-1] - time_ps[0]) if len(time_ps) > 1 else 0.0
    ratio = abs(slope) * duration / kin_std if kin_std > 0 else math.inf
    return slope, ratio, float(np.std(e_tot)), kin_std


def run_md(
    atoms: Atoms,
    *,
    ensemble: str = "nve",
    temperature: float = 300.0,
    timestep_fs: float = 0.5,
    steps: int = 1000,
    friction_per_fs: float = 0.01,
    log_every: int = 1,
    seed: int = 0,
    output: Path | None = None,
    write_every: int = 10,
    progress: bool = True,
    max_force_spread: float | None = None,
) -> tuple[MDReport, dict[str, np.ndarray]]:
    """Run dynamics on ``atoms`` (calculator attached) and report conservation and sanity.

    With a committee calculator (several checkpoints), the largest per-atom force spread [eV/Å] of
    each frame is logged as ``force_spread``; above ``max_force_spread`` the run stops as unphysical.

    Velocities are drawn from Maxwell–Boltzmann at ``temperature`` [K] (seeded), without net momentum
    or rotation. Returns the report and the logged series (time [ps], e_pot, e_kin [eV], ...).
    """
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dt = timestep_fs * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep=dt)
    elif ensemble == "langevin":
        dyn = Langevin(
            atoms, timestep=dt, temperature_K=temperature, friction=friction_per_fs / units.fs, rng=rng
        )
    else:
        raise ValueError(f"ensemble {ensemble!r}; expected 'nve' or 'langevin'")
    trajectory = None
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        trajectory = output / "trajectory.extxyz"
        trajectory.unlink(missing_ok=True)
    series: dict[str, list[float]] = {
        k: [] for k in ("time_ps", "e_pot", "e_kin", "max_force", "d_min", "contact_ratio")
    }
    n = len(atoms)
    bounds = contact_bounds(atoms.numbers)
    worst: list[Contact] = []
    e0 = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    reason, left_data = "", ""
    bar = tqdm(total=steps, desc=f"MD {ensemble}", disable=not progress, unit="step", mininterval=2.0)

    def record() -> None:
        nonlocal reason, left_data
        forces = atoms.get_forces()
        spread = atoms.calc.results.get("max_force_std") if atoms.calc is not None else None
        if spread is not None:
            series.setdefault("force_spread", []).append(spread)
            if max_force_spread is not None and spread > max_force_spread:
                left_data = (f"committee force spread {spread:.2f} eV/Å at step {dyn.nsteps} "
                             f"(stop at {max_force_spread:g} eV/Å)")
        e_pot, e_kin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        series["time_ps"].append(dyn.get_time() / (1000 * units.fs))
        series["e_pot"].append(e_pot)
        series["e_kin"].append(e_kin)
        series["max_force"].append(float(np.linalg.norm(forces, axis=1).max()))
        whole = make_whole(atoms.positions, atoms.numbers, atoms.cell.array, atoms.pbc) if atoms.pbc.any() else None
        contact = closest_contact(atoms.positions if whole is None else whole, bounds)
        series["d_min"].append(contact.min_distance)
        series["contact_ratio"].append(contact.ratio)
        if not worst or contact.ratio < worst[0].ratio:
            worst[:] = [contact]
        if trajectory is not None and dyn.nsteps % write_every == 0:
            atoms.write(trajectory, format="extxyz", append=True)
        if series["d_min"][-1] < MIN_DISTANCE_ANGSTROM:
            reason = f"atoms {series['d_min'][-1]:.2f} Å apart at step {dyn.nsteps}"
        elif not np.isfinite(e_pot + e_kin) or (
            ensemble == "nve" and abs(e_pot + e_kin - e0) / n > MAX_ENERGY_CHANGE_EV_PER_ATOM
        ):
            reason = f"total energy blew up at step {dyn.nsteps}"
        bar.update(dyn.nsteps - bar.n)
        if reason or left_data:
            raise _Stop(reason or left_data)

    dyn.attach(record, interval=log_every)
    start = time.perf_counter()
    try:
        dyn.run(steps)  # observers also see step 0
    except _Stop:
        if reason:
            logger.error("MD exploded: %s", reason)
        else:
            logger.error("MD stopped, the model left its training data: %s", left_data)
    finally:
        bar.close()
    wall_s = time.perf_counter() - start
    arrays = {k: np.asarray(v) for k, v in series.items()}
    report = summarise(arrays, atoms.numbers, timestep_fs, int(dyn.nsteps), ensemble, worst[0], reason,
                       left_data, wall_s=wall_s)
    if output is not None:
        write_outputs(report, arrays, output, title=f"{ensemble.upper()} {timestep_fs} fs")
    return report, arrays


def summarise(
    arrays: dict[str, np.ndarray],
    z: np.ndarray,
    timestep_fs: float,
    steps: int,
    ensemble: str,
    worst: Contact,
    exploded_reason: str = "",
    stopped_reason: str = "",
    wall_s: float = math.nan,
) -> MDReport:
    """The report of a trajectory from its logged series (``time_ps`` [ps], ``e_pot``, ``e_kin``
    [eV], ``max_force`` [eV/Å], ``d_min`` [Å], each [n_frames]) and its closest contact;
    ``stopped_reason`` says why a run was stopped as unphysical (e.g. a committee spread);
    ``wall_s`` [s] gives the speed (steps/s, ns/day)."""
    n = len(z)
    slope, ratio, tot_std, kin_std = drift_report(arrays["time_ps"], arrays["e_pot"], arrays["e_kin"], n)
    temperature = arrays["e_kin"] / (1.5 * n * units.kB)
    max_force = float(arrays["max_force"].max())
    unphysical = [] if exploded_reason else unphysical_reasons(z, worst, temperature, max_force, ensemble)
    if stopped_reason and not exploded_reason:
        unphysical.insert(0, stopped_reason)
    return MDReport(
        steps=steps,
        timestep_fs=timestep_fs,
        n_atoms=n,
        drift_mev_per_atom_ps=slope,
        drift_over_kinetic_fluctuation=ratio,
        total_energy_std_mev_per_atom=tot_std,
        kinetic_energy_std_mev_per_atom=kin_std,
        max_force_ev_per_angstrom=max_force,
        min_distance_angstrom=float(arrays["d_min"].min()),
        mean_temperature_k=float(temperature.mean()),
        exploded=bool(exploded_reason),
        reason=exploded_reason,
        start_temperature_k=float(temperature[0]),
        closest_contact_ratio=worst.ratio,
        status="exploded" if exploded_reason else ("unphysical" if unphysical else "ok"),
        unphysical=unphysical,
        max_force_spread_ev_per_angstrom=float(arrays["force_spread"].max()) if "force_spread" in arrays else None,
        wall_s=wall_s,
        steps_per_s=steps / wall_s if wall_s > 0 else math.nan,
        ns_per_day=steps * timestep_fs * 1e-6 / wall_s * 86_400 if wall_s > 0 else math.nan,
    )


def write_outputs(report: MDReport, arrays: dict[str, np.ndarray], output: Path, title: str = "") -> None:
    """``report.json``, ``energies.npz`` (the series) and ``energies.png`` in ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    np.savez(output / "energies.npz", **arrays)
    (output / "report.json").write_text(json.dumps(asdict(report), indent=2))
    plot_energies(arrays, report.n_atoms, output / "energies.png", title=title)


class _Stop(RuntimeError):
    pass


def plot_energies(series: dict[str, np.ndarray], n_atoms: int, path: Path, title: str = "") -> None:
    """Potential, kinetic and total energy [meV/atom, relative to the start] against time [ps]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = series["time_ps"]
    fig, axes = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    for key, label in (("e_pot", "potential"), ("e_kin", "kinetic")):
        axes[0].plot(t, (series[key] - series[key][0]) / n_atoms * 1e3, label=label, lw=0.8)
    e_tot = (series["e_pot"] + series["e_kin"]) / n_atoms * 1e3
    axes[0].plot(t, e_tot - e_tot[0], label="total", lw=1.2, color="k")
    axes[0].set_ylabel("E − E(0) [meV/atom]")
    axes[0].legend(loc="upper right")
    axes[1].plot(t, e_tot - e_tot[0], color="k", lw=0.8)
    if len(t) > 1:
        fit = np.polyval(np.polyfit(t, e_tot, 1), t)
        axes[1].plot(t, fit - e_tot[0], "r--", lw=1, label="linear fit")
        axes[1].legend(loc="upper right")
    axes[1].set_ylabel("E_tot − E_tot(0) [meV/atom]")
    axes[1].set_xlabel("time [ps]")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _starting_structure(args: argparse.Namespace, record: RunRecord) -> Atoms:
    if args.structure:
        import ase.io

        return ase.io.read(args.structure)
    z, positions = record.starting_frame(args.from_split)  # --structure is the way out of its errors
    return Atoms(numbers=z, positions=positions)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geopatra md", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, nargs="+",
                   help="a geopatra .ckpt, or several (a committee: mean forces, and their spread is logged)")
    p.add_argument("--max-force-spread", type=float, default=None,
                   help="stop (exit 4) when the committee's largest force spread exceeds this [eV/Å]")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--structure", help="starting geometry (any ASE-readable file, Å)")
    source.add_argument("--from-split", choices=("train", "val", "test"), default="test",
                        help="start from the first frame of this subset of the checkpoint's data")
    p.add_argument("--ensemble", choices=("nve", "langevin"), default="nve")
    p.add_argument("--temperature", type=float, default=300.0, help="initial/bath temperature [K]")
    p.add_argument("--timestep", type=float, default=0.5, help="time step [fs]")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction [1/fs]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model first (tens of seconds once; faster steps on long runs)")
    p.add_argument("--write-every", type=int, default=10, help="trajectory stride [steps]")
    p.add_argument("--output", type=Path, required=True, help="directory for trajectory, log, PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from geopatra.calculator import GeoPatraCalculator

    calc = GeoPatraCalculator(args.checkpoint, device=args.device, compile=args.compile)
    atoms = _starting_structure(args, calc.record)
    atoms.calc = calc
    report, _ = run_md(
        atoms,
        ensemble=args.ensemble,
        temperature=args.temperature,
        timestep_fs=args.timestep,
        steps=args.steps,
        friction_per_fs=args.friction,
        seed=args.seed,
        output=args.output,
        write_every=args.write_every,
        max_force_spread=args.max_force_spread,
    )
    spread = report.max_force_spread_ev_per_angstrom
    lines = [
        f"{calc.kind} {args.ensemble} {report.steps} steps × {args.timestep} fs "
        f"({report.steps * args.timestep / 1000:.2f} ps), {report.n_atoms} atoms",
        f"  total-energy drift      {report.drift_mev_per_atom_ps:+.4f} meV/atom/ps",
        f"  drift / σ(E_kin)        {report.drift_over_kinetic_fluctuation:.4f}",
        f"  σ(E_tot), σ(E_kin)      {report.total_energy_std_mev_per_atom:.4f}, "
        f"{report.kinetic_energy_std_mev_per_atom:.4f} meV/atom",
        f"  max |F|                 {report.max_force_ev_per_angstrom:.3f} eV/Å",
        f"  min distance            {report.min_distance_angstrom:.3f} Å",
        f"  temperature             {report.start_temperature_k:.1f} K at the start, "
        f"{report.mean_temperature_k:.1f} K mean",
        f"  closest contact         {report.closest_contact_ratio:.2f} x its bound",
        *([f"  max committee spread    {spread:.3f} eV/Å"] if spread is not None else []),
        f"  speed                   {report.steps_per_s:.1f} steps/s, {report.ns_per_day:.3f} ns/day",
        f"  output                  {args.output}",
    ]
    print("\n".join(lines))
    if report.exploded:
        print(f"EXPLODED (exit {EXIT_STATUS['exploded']}): {report.reason}")
    elif report.unphysical:
        print(f"UNPHYSICAL (exit {EXIT_STATUS['unphysical']}): the model left its training data")
        for reason in report.unphysical:
            print(f"  - {reason}")
    else:
        print("  status                  ok")
    return EXIT_STATUS[report.status]
