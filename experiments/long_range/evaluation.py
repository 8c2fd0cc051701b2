"""Stage ``evaluate``: test-set predictions of every run, errors per atom group, the donor–acceptor
force coupling of every model, and the attention weights of the global GeoPaTra models.

Outputs under ``<work>/eval/``: ``<molecule>_<model>.npz`` (test predictions, per-frame errors,
coupling blocks) and ``<molecule>_attention.npz`` ([layers, heads, N, N] averaged over test frames).
Each file is skipped when it exists.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from experiments.long_range.prepare import paths
from experiments.long_range.training import run_dir
from geopatra.checkpoint import load_potential
from geopatra.data import read_dataset
from geopatra.data.splits import Split
from geopatra.models.forces import force_jacobian, predict_frames

logger = logging.getLogger(__name__)


def checkpoint_of(directory: Path) -> Path:
    """The best checkpoint by validation force MAE (``best-*.ckpt``), else ``last.ckpt``."""
    best = sorted((directory / "checkpoints").glob("best-*.ckpt"))
    return best[-1] if best else directory / "checkpoints" / "last.ckpt"


def coupling(
    potential, pos: np.ndarray, z: np.ndarray, donor: np.ndarray, acceptor: np.ndarray, device: str
) -> np.ndarray:
    """dF_acceptor / dR_donor [3 n_acceptor, 3 n_donor] (kcal/mol/Å²) of one frame, by autograd."""
    return force_jacobian(potential, torch.tensor(pos, dtype=torch.float64, device=device),
                          torch.tensor(z, dtype=torch.long, device=device),
                          torch.as_tensor(acceptor, device=device), torch.as_tensor(donor, device=device)).cpu().numpy()


def evaluate_run(molecule: str, model: str, work: Path, device: str) -> Path:
    """Test predictions, per-frame errors and coupling blocks of one run."""
    out = work / "eval" / f"{molecule}_{model}.npz"
    if out.exists():
        return out
    files = paths(work, molecule)
    meta = json.loads(files["meta"].read_text())
    donor, acceptor = np.array(meta["donor"]), np.array(meta["acceptor"])
    dataset = read_dataset(files["data"])
    test = Split.load(files["split"]).test
    # float64 everywhere (a float32-trained GeoPaTra evaluated in float64: same function, cleaner
    # second derivatives for the coupling)
    potential, _ = load_potential(checkpoint_of(run_dir(work, molecule, model)), map_location=device, dtype="float64")
    potential.to(device)
    E, F = (t.cpu().numpy() for t in predict_frames(potential, dataset.R[test], dataset.z, device=device))
    reference = np.load(files["coupling"])
    blocks = np.stack(
        [coupling(potential, dataset.R[f], dataset.z, donor, acceptor, device) for f in reference["frames"]]
    )
    force_error = np.abs(F - dataset.F[test])  # [n_test, N, 3]
    per_frame = {  # force MAE per test frame [n_test] on each atom group
        f"force_error_{group}": force_error[:, atoms].mean(axis=(1, 2))
        for group, atoms in (("all", slice(None)), ("donor", donor), ("acceptor", acceptor))
    }
    energy_error = E - dataset.E[test]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        frames=test,
        E=E,
        F=F,
        energy_error=energy_error,
        **per_frame,
        coupling_frames=reference["frames"],
        coupling=blocks,
    )
    logger.info(
        "evaluate %s/%s: force MAE %.3f (donor %.3f, acceptor %.3f) kcal/mol/Å, energy MAE %.3f kcal/mol",
        molecule,
        model,
        *(per_frame[f"force_error_{group}"].mean() for group in ("all", "donor", "acceptor")),
        np.abs(energy_error).mean(),
    )
    return out


def attention(molecule: str, work: Path, device: str, n_frames: int) -> Path:
    """Mean attention weights [layers, heads, N, N] of the global GeoPaTra over test frames."""
    out = work / "eval" / f"{molecule}_attention.npz"
    if out.exists():
        return out
    files = paths(work, molecule)
    dataset = read_dataset(files["data"])
    frames = Split.load(files["split"]).test[:n_frames]
    potential, _ = load_potential(checkpoint_of(run_dir(work, molecule, "global")), map_location=device)
    potential.to(device)
    z = torch.tensor(dataset.z, dtype=torch.long, device=device)
    total = 0.0
    for frame in frames:
        total = total + potential.attention_weights(torch.tensor(dataset.R[frame], device=device), z).double().cpu()
    weights = (total / len(frames)).numpy()
    distance = np.linalg.norm(dataset.R[frames][:, :, None] - dataset.R[frames][:, None], axis=-1).mean(axis=0)
    np.savez(out, weights=weights, frames=frames, mean_distance=distance)
    return out


def evaluate_all(molecules: list[str], work: Path, device: str, attention_frames: int, runs: list[str]) -> None:
    """Evaluate ``runs`` (run names, ``training.run_names``) of every molecule, and the attention of
    the global model when it is one of them."""
    for molecule in molecules:
        for model in runs:
            evaluate_run(molecule, model, work, device)
        if "global" in runs:
            attention(molecule, work, device, attention_frames)
