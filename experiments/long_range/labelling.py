"""Stage ``label``: several independent GFN2-xTB Langevin trajectories per molecule (different seeds:
different RDKit conformers, velocities and thermostat noise), run in parallel through
``python -m geopatra.labeling`` and merged into one npz per molecule.

Each trajectory is a separate ``geopatra label`` run, so it checkpoints and resumes on its own; a
finished trajectory file is never recomputed, and a finished merged file skips the stage.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from experiments.long_range.jobs import run_parallel
from experiments.long_range.molecules import SMILES, check_atom_order
from geopatra.data.download import sgdml_md5
from geopatra.data.npz import write_npz_atomic
from geopatra.labeling.driver import MDSettings, label_command

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelSettings:
    """MD sampling of one molecule: ``trajectories`` independent runs of ``md`` (Langevin settings
    of ``geopatra label``); trajectory k uses seed ``md.seed + k``."""

    trajectories: int
    md: MDSettings


def trajectory_command(name: str, seed: int, settings: LabelSettings, output: Path) -> list[str]:
    """The ``geopatra label`` command line of one trajectory."""
    return label_command(
        replace(settings.md, seed=seed),
        output,
        smiles=SMILES[name],
        name=name,
        options=["--checkpoint-every", "50", "--no-progress"],
    )


def merge(name: str, parts: list[Path], output: Path) -> Path:
    """Concatenate trajectory files (same molecule, atom order) into one sGDML-style npz with a
    per-frame ``trajectory`` index, after checking RDKit's atom order on the first frame of each."""
    R, E, F, trajectory, seeds = [], [], [], [], []
    z = theory = None
    for k, part in enumerate(parts):
        with np.load(part) as data:
            check_atom_order(name, data["z"], data["R"][0])
            if z is not None and not np.array_equal(z, data["z"]):
                raise ValueError(f"{part}: atoms differ from {parts[0]}")
            z, theory = data["z"], str(data["theory"])
            R.append(data["R"])
            E.append(data["E"])
            F.append(data["F"])
            trajectory.append(np.full(len(data["E"]), k, dtype=np.int64))
            seeds.append(int(data["seed"]))
            meta = {key: data[key] for key in ("temperature", "timestep", "stride", "friction", "equilibration_steps")}
    arrays = {
        "R": np.concatenate(R),
        "z": z,
        "E": np.concatenate(E),
        "F": np.concatenate(F),
        "r_unit": np.str_("Ang"),
        "e_unit": np.str_("kcal/mol"),
        "name": np.str_(name),
        "theory": np.str_(theory),
        "smiles": np.str_(SMILES[name]),
        **meta,
        "trajectory": np.concatenate(trajectory),
        "seeds": np.array(seeds, dtype=np.int64),
        "type": np.str_("d"),
    }
    arrays["md5"] = np.str_(sgdml_md5(arrays))
    write_npz_atomic(output, arrays, compress=True)
    logger.info("%s: merged %d trajectories, %d frames -> %s", name, len(parts), len(arrays["E"]), output)
    return output


def label_all(names: list[str], settings: LabelSettings, work: Path, workers: int) -> dict[str, Path]:
    """Label every molecule (skipping finished trajectories and merged files); {name: merged npz}."""
    merged = {name: work / "data" / f"{name}.npz" for name in names}
    parts = {
        name: [work / "label" / f"{name}_seed{settings.md.seed + k}.npz" for k in range(settings.trajectories)]
        for name in names
    }
    commands = []
    for name in names:
        if merged[name].exists():
            logger.info("label: %s exists, skipped", merged[name])
            continue
        for k, part in enumerate(parts[name]):
            if not part.exists():
                command = trajectory_command(name, settings.md.seed + k, settings, part)
                commands.append((command, part.with_suffix(".log")))
    if commands:
        logger.info("label: %d trajectories on %d workers", len(commands), workers)
        start = time.perf_counter()
        run_parallel(commands, workers)
        logger.info("label: trajectories done in %.0f s", time.perf_counter() - start)
    for name in names:
        if not merged[name].exists():
            merge(name, parts[name], merged[name])
    return merged
