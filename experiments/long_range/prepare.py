"""End of stage ``label``: the split every model of a molecule shares, the atom groups for the
analysis (so later stages need neither RDKit nor tblite), and the reference donor–acceptor coupling.

Coupling: the block C[a, d] = dF_a / dR_d [kcal/mol/Å²] of the force on acceptor atom a (3 x 3 = 9
components) with respect to the position of donor atom d (9 x 3 = 27 coordinates), i.e. minus the
donor–acceptor block of the Hessian. A model whose receptive field cannot connect the two groups has
C = 0. The reference is GFN2-xTB by central differences (h = 0.01 Å, SCF accuracy 0.01: converged to
about 1e-3 kcal/mol/Å² against h = 0.005 and 0.02 Å).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from experiments.long_range.modes import Mode
from experiments.long_range.molecules import depiction, groups
from geopatra.data import read_dataset
from geopatra.data.splits import Split, make_split
from geopatra.units import EV_TO_KCAL_MOL

logger = logging.getLogger(__name__)

FD_STEP = 0.01  # Å
SCF_ACCURACY = 0.01  # tblite accuracy (1 = default); tighter SCF for clean finite differences


def paths(work: Path, name: str) -> dict[str, Path]:
    """Files of one molecule made by stage ``label``."""
    data = work / "data"
    return {
        "data": data / f"{name}.npz",
        "split": data / f"{name}_split.npz",
        "split_sgdml": data / f"{name}_split_sgdml.npz",
        "meta": data / f"{name}_meta.json",
        "coupling": data / f"{name}_coupling_gfn2.npz",
    }


def make_splits(name: str, work: Path, mode: Mode) -> None:
    """The shared split (seed 0; test = all frames not in train or validation) and the sGDML split
    (a seeded subset of its training frames, the same validation and test frames)."""
    files = paths(work, name)
    if files["split"].exists() and files["split_sgdml"].exists():
        return
    dataset = read_dataset(files["data"])
    split = make_split(dataset, mode.n_train, mode.n_val, None, seed=0)
    split.save(files["split"])
    subset = np.sort(np.random.default_rng(1).choice(split.train, mode.sgdml_train, replace=False))
    Split(subset, split.val, split.test, split.fingerprint, split.seed).save(files["split_sgdml"])
    logger.info(
        "%s: split %d / %d / %d, sGDML trains on %d",
        name,
        len(split.train),
        len(split.val),
        len(split.test),
        len(subset),
    )


def write_meta(name: str, work: Path) -> None:
    """Donor/acceptor atoms, labels, bonds and 2D drawing coordinates as JSON."""
    g = groups(name)
    meta = {
        "name": name,
        "z": g.z.tolist(),
        "donor": g.donor.tolist(),
        "acceptor": g.acceptor.tolist(),
        "labels": g.labels,
        "bonds": g.bonds.tolist(),
        "xy": np.round(depiction(name), 4).tolist(),
    }
    paths(work, name)["meta"].write_text(json.dumps(meta, indent=1))


def reference_coupling(name: str, work: Path, n_frames: int) -> None:
    """GFN2-xTB coupling blocks [n_frames, 9, 27] on the first ``n_frames`` test frames."""
    from ase import Atoms

    from geopatra.labeling.structures import import_optional

    files = paths(work, name)
    if files["coupling"].exists():
        return
    meta = json.loads(files["meta"].read_text())
    donor, acceptor = np.array(meta["donor"]), np.array(meta["acceptor"])
    dataset = read_dataset(files["data"])
    frames = Split.load(files["split"]).test[:n_frames]
    calc = import_optional("tblite.ase").TBLite(method="GFN2-xTB", verbosity=0, accuracy=SCF_ACCURACY)
    blocks = np.zeros((len(frames), 3 * len(acceptor), 3 * len(donor)))
    for k, frame in enumerate(frames):
        atoms = Atoms(numbers=dataset.z, positions=dataset.R[frame])
        atoms.calc = calc
        for column, (d, axis) in enumerate((d, axis) for d in donor for axis in range(3)):
            forces = []
            for sign in (1.0, -1.0):
                moved = atoms.positions.copy()
                moved[d, axis] += sign * FD_STEP
                atoms.positions = moved
                forces.append(atoms.get_forces()[acceptor].reshape(-1) * EV_TO_KCAL_MOL)
            atoms.positions = dataset.R[frame]
            blocks[k, :, column] = (forces[0] - forces[1]) / (2 * FD_STEP)
    np.savez(files["coupling"], frames=frames, blocks=blocks, step=FD_STEP, accuracy=SCF_ACCURACY)
    logger.info(
        "%s: GFN2-xTB coupling on %d frames, RMS %.3f kcal/mol/Å²",
        name,
        len(frames),
        float(np.sqrt(np.mean(blocks**2))),
    )


def prepare(name: str, work: Path, mode: Mode) -> None:
    """Split, metadata and reference coupling of one labelled molecule (each skipped when done)."""
    make_splits(name, work, mode)
    if not paths(work, name)["meta"].exists():
        write_meta(name, work)
    reference_coupling(name, work, mode.coupling_frames)
