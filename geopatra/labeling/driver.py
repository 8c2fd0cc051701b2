"""``geopatra label``: make an MD22-style dataset (R, z, E, F) for any molecule.

Recipe (as MD22 was made, with a cheaper reference): a 3D geometry from SMILES (RDKit ETKDG + MMFF)
or a structure file; Langevin MD at a set temperature with a reference ASE calculator (default
GFN2-xTB via tblite); after an equilibration period, every ``stride``-th MD step is kept as a frame.
Energies are converted from eV to kcal/mol and forces from eV/Å to kcal/mol/Å.

The run is deterministic for a given seed and interrupt-safe: every so often a checkpoint
(``<output>.partial``: positions, momenta, RNG state, frames so far) is written atomically, and
re-running the same command resumes from it; the resumed run produces the same file, byte for byte,
as an uninterrupted one (with a stateless calculator, as the tblite ones made here are).

Example:
    geopatra label --smiles "CCO" --name ethanol --frames 2000 --output ethanol_gfn2.npz
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, ZeroRotation
from tqdm.auto import tqdm

from geopatra.data.dataset import fingerprint_arrays
from geopatra.data.download import sgdml_md5
from geopatra.errors import DataError
from geopatra.labeling.calculators import TBLITE_METHODS, reference_calculator
from geopatra.labeling.report import trajectory_report
from geopatra.labeling.resume import load_checkpoint, save_checkpoint, write_npz_atomic
from geopatra.labeling.structures import atoms_from_file, atoms_from_smiles
from geopatra.units import EV_TO_KCAL_MOL

try:  # ASE >= 3.29; the same draw as the deprecated MaxwellBoltzmannDistribution
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # pragma: no cover - older ASE
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms: Atoms, temperature_K: float, *, rng=None) -> None:
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class MDSettings:
    """Langevin MD sampling settings; validated on construction.

    Attributes:
        temperature: thermostat temperature [K].
        timestep: MD time step [fs].
        stride: MD steps between kept frames (frames are ``stride * timestep`` fs apart).
        frames: number of frames to keep.
        equilibration_steps: MD steps run (and discarded) before the first kept frame.
        friction: Langevin friction [1/fs].
        seed: seed of the RNG driving initial velocities and the thermostat noise.
    """

    temperature: float = 500.0
    timestep: float = 0.5
    stride: int = 10
    frames: int = 2000
    equilibration_steps: int = 2000
    friction: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {
            "temperature": self.temperature,
            "timestep": self.timestep,
            "stride": self.stride,
            "frames": self.frames,
            "friction": self.friction,
        }
        for key, value in positive.items():
            if not value > 0:
                raise ValueError(f"MD setting {key}={value!r}; expected a positive number.")
        if self.equilibration_steps < 0:
            raise ValueError(f"equilibration_steps={self.equilibration_steps}; expected >= 0.")

    @property
    def total_steps(self) -> int:
        return self.equilibration_steps + self.frames * self.stride

    def cli_args(self) -> list[str]:
        """These settings as ``geopatra label`` options (read back by :func:`settings_from_args`)."""
        return [
            "--temperature", str(self.temperature),
            "--timestep", str(self.timestep),
            "--stride", str(self.stride),
            "--frames", str(self.frames),
            "--equilibration-steps", str(self.equilibration_steps),
            "--friction", str(self.friction),
            "--seed", str(self.seed),
        ]  # fmt: skip


def checkpoint_path(output: str | Path) -> Path:
    """Where the partial run for ``output`` is kept: ``<output>.partial`` (never a dataset name)."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


def label_molecule(
    atoms: Atoms,
    output: str | Path,
    *,
    settings: MDSettings | None = None,
    calculator: Calculator | None = None,
    theory: str | None = None,
    name: str = "molecule",
    source: str = "",
    checkpoint_every: int = 100,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run Langevin MD on ``atoms`` with ``calculator`` and write the labelled frames to ``output``.

    Args:
        atoms: starting structure (positions in Å); it is copied, never modified.
        output: the npz to write (keys R [n,N,3] Å, z [N], E [n] kcal/mol, F [n,N,3] kcal/mol/Å,
            plus metadata: r_unit, e_unit, name, theory, temperature, timestep, stride, seed, ...).
        settings: MD settings (default :class:`MDSettings`).
        calculator: reference ASE calculator (eV, eV/Å). Default: GFN2-xTB through tblite. For an
            exact resume it must be stateless (results depend on positions only).
        theory: level-of-theory string stored in the file (default: tblite's or the class name).
        name: dataset/molecule name stored in the file.
        source: provenance stored in the file, e.g. ``"smiles:CCO"`` or ``"xyz:start.xyz"``.
        checkpoint_every: write the checkpoint every this many frames' worth of MD steps.
        overwrite: replace an existing ``output`` (otherwise FileExistsError).
        progress: show a tqdm bar over the MD steps (equilibration included), frames written as postfix.

    Returns:
        ``output`` as a Path.

    Raises:
        FileExistsError: ``output`` exists and ``overwrite`` is False.
        CheckpointError: a checkpoint of a run with other settings is in the way.
        DataError: the MD produced non-finite energies or forces (the run exploded).
    """
    settings = settings or MDSettings()
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every}; expected >= 1.")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it.")
    if calculator is None:
        calculator, default_theory = reference_calculator("gfn2")
        theory = theory or default_theory
    theory = theory or f"{type(calculator).__name__} (ASE)"

    atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions)
    n_atoms = len(atoms)
    run_settings = {
        **asdict(settings),
        "name": name,
        "theory": theory,
        "source": source,
        "z": atoms.numbers.tolist(),
        "start_positions": fingerprint_arrays(
            atoms.positions[None], atoms.numbers, np.zeros(1), np.zeros((1, n_atoms, 3))
        ),
    }
    rng = np.random.default_rng(settings.seed)
    R = np.zeros((settings.frames, n_atoms, 3))
    E = np.zeros(settings.frames)
    F = np.zeros((settings.frames, n_atoms, 3))
    step = n_done = 0
    partial = checkpoint_path(output)
    if partial.exists():
        state, rng_state = load_checkpoint(partial, settings=run_settings)
        step, n_done = int(state["step"]), int(state["n_done"])
        R[:n_done], E[:n_done], F[:n_done] = state["R"], state["E"], state["F"]
        atoms.set_positions(state["positions"], apply_constraint=False)
        atoms.set_momenta(state["momenta"], apply_constraint=False)
        rng.bit_generator.state = rng_state
        logger.info("resuming %s from step %d (%d frames done)", partial, step, n_done)
    else:
        thermalize_momenta(atoms, settings.temperature, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
    atoms.set_constraint(FixCom())
    atoms.calc = calculator
    dynamics = Langevin(
        atoms,
        settings.timestep * units.fs,
        temperature_K=settings.temperature,
        friction=settings.friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    every = checkpoint_every * settings.stride
    with tqdm(total=settings.total_steps, initial=step, unit="step", disable=not progress, desc=f"label {name}") as bar:
        while step < settings.total_steps:
            dynamics.step()
            step += 1
            bar.update(1)
            if step <= settings.equilibration_steps or step % settings.stride == 0:
                phase = "equilibrating" if step <= settings.equilibration_steps else "frames"
                bar.set_postfix_str(f"{phase}, {n_done}/{settings.frames} frames", refresh=False)
            after_equilibration = step - settings.equilibration_steps
            if after_equilibration > 0 and after_equilibration % settings.stride == 0:
                R[n_done] = atoms.get_positions()
                E[n_done] = atoms.get_potential_energy() * EV_TO_KCAL_MOL
                F[n_done] = atoms.get_forces(apply_constraint=False) * EV_TO_KCAL_MOL
                if not (np.isfinite(E[n_done]) and np.isfinite(F[n_done]).all()):
                    raise DataError(
                        f"{name}: non-finite energy or forces at MD step {step}; "
                        "lower --timestep or --temperature."
                    )
                n_done += 1
            if step % every == 0 and step < settings.total_steps:
                state = {
                    "step": np.int64(step),
                    "n_done": np.int64(n_done),
                    "positions": atoms.get_positions(),
                    "momenta": atoms.get_momenta(),
                    "R": R[:n_done],
                    "E": E[:n_done],
                    "F": F[:n_done],
                }
                save_checkpoint(
                    partial, settings=run_settings, state=state, rng_state=rng.bit_generator.state
                )
    _write_dataset(
        output, R, atoms.numbers, E, F, settings, name=name, theory=theory, source=source
    )
    if partial.exists():
        partial.unlink()
    return output


def _write_dataset(
    output: Path,
    R: np.ndarray,
    z: np.ndarray,
    E: np.ndarray,
    F: np.ndarray,
    settings: MDSettings,
    *,
    name: str,
    theory: str,
    source: str,
) -> None:
    z = np.asarray(z, dtype=np.int64)
    arrays = {
        "R": R,
        "z": z,
        "E": E,
        "F": F,
        "r_unit": np.str_("Ang"),
        "e_unit": np.str_("kcal/mol"),
        "name": np.str_(name),
        "theory": np.str_(theory),
        "source": np.str_(source),
        "temperature": np.float64(settings.temperature),
        "timestep": np.float64(settings.timestep),
        "stride": np.int64(settings.stride),
        "equilibration_steps": np.int64(settings.equilibration_steps),
        "friction": np.float64(settings.friction),
        "seed": np.int64(settings.seed),
        "fingerprint": np.str_(fingerprint_arrays(R, z, E, F)),
        "type": np.str_("d"),
    }
    if source.startswith("smiles:"):
        arrays["smiles"] = np.str_(source[len("smiles:") :])
    arrays["md5"] = np.str_(sgdml_md5(arrays))
    write_npz_atomic(output, arrays, compress=True)
    logger.info("wrote %s: %d frames of %d atoms (%s)", output, len(E), len(z), theory)
    for line in trajectory_report(R, z, E, F).lines():
        logger.info("%s: %s", output.name, line)


def _parser() -> argparse.ArgumentParser:
    defaults = MDSettings()
    parser = argparse.ArgumentParser(
        prog="geopatra label",
        description="Make an MD22-style dataset: Langevin MD with a reference calculator "
        "(GFN2-xTB by default); writes R [Å], z, E [kcal/mol], F [kcal/mol/Å] to an npz. "
        "Re-running an interrupted command resumes it.",
    )
    start = parser.add_mutually_exclusive_group(required=True)
    start.add_argument("--smiles", help="SMILES of the molecule (3D via RDKit ETKDG + MMFF)")
    start.add_argument("--xyz", type=Path, help="starting structure file (any format ASE reads)")
    parser.add_argument("--name", help="dataset name (default: the xyz stem or 'molecule')")
    parser.add_argument("--output", "-o", type=Path, required=True, help="npz file to write")
    parser.add_argument("--temperature", type=float, default=defaults.temperature, help="[K]")
    parser.add_argument("--timestep", type=float, default=defaults.timestep, help="[fs]")
    parser.add_argument("--stride", type=int, default=defaults.stride, help="MD steps per frame")
    parser.add_argument("--frames", type=int, default=defaults.frames)
    parser.add_argument("--equilibration-steps", type=int, default=defaults.equilibration_steps)
    parser.add_argument("--friction", type=float, default=defaults.friction, help="[1/fs]")
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the embedding, velocities and thermostat",
    )
    parser.add_argument("--calculator", choices=sorted(TBLITE_METHODS), default="gfn2")
    parser.add_argument("--charge", type=int, default=None, help="net charge [e] (default: the SMILES', or 0)")
    parser.add_argument("--multiplicity", type=int, default=None, help="2S + 1 (default: the SMILES', or 1)")
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="frames between checkpoints"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def settings_from_args(args: argparse.Namespace) -> MDSettings:
    """The :class:`MDSettings` of parsed ``geopatra label`` options."""
    return MDSettings(
        temperature=args.temperature,
        timestep=args.timestep,
        stride=args.stride,
        frames=args.frames,
        equilibration_steps=args.equilibration_steps,
        friction=args.friction,
        seed=args.seed,
    )


def label_command(
    settings: MDSettings,
    output: str | Path,
    *,
    smiles: str | None = None,
    xyz: str | Path | None = None,
    name: str | None = None,
    calculator: str = "gfn2",
    options: Sequence[str] = (),
) -> list[str]:
    """The command line of one ``geopatra label`` run in this interpreter, from ``smiles`` or
    ``xyz``: for scripts that run several trajectories as separate, resumable processes.
    ``options``: further flags (e.g. ``["--no-progress"]``)."""
    if (smiles is None) == (xyz is None):
        raise ValueError("label_command: give exactly one of smiles and xyz")
    start = ["--smiles", smiles] if smiles is not None else ["--xyz", str(xyz)]
    named = ["--name", name] if name is not None else []
    return [
        sys.executable, "-m", "geopatra.labeling", *start, *named, *settings.cli_args(),
        "--calculator", calculator, *options, "--output", str(output),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of ``geopatra label``; returns the exit status."""
    args = _parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = settings_from_args(args)
    if args.smiles is not None:
        atoms = atoms_from_smiles(args.smiles, seed=args.seed)
        source, name = f"smiles:{args.smiles}", args.name or "molecule"
    else:
        atoms = atoms_from_file(args.xyz)
        source, name = f"xyz:{args.xyz.name}", args.name or args.xyz.stem
    charge = atoms.info.get("charge", 0) if args.charge is None else args.charge
    multiplicity = atoms.info.get("multiplicity", 1) if args.multiplicity is None else args.multiplicity
    calculator, theory = reference_calculator(args.calculator, charge=charge, multiplicity=multiplicity)
    try:
        label_molecule(
            atoms,
            args.output,
            settings=settings,
            calculator=calculator,
            theory=theory,
            name=name,
            source=source,
            checkpoint_every=args.checkpoint_every,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        logger.warning(
            "interrupted; run the same command again to resume from %s",
            checkpoint_path(args.output),
        )
        return 130
    return 0
