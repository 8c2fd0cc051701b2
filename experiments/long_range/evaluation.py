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
from prepare import paths
from training import run_dir

from geopatra.checkpoint import load_potential
from geopatra.data import read_dataset
from geopatra.data.splits import Split
from geopatra.models.forces import energy_and_forces

logger = logging.getLogger(__name__)


def checkpoint_of(directory: Path) -> Path:
    """The best checkpoint by validation force MAE (``best-*.ckpt``), else ``last.ckpt``."""
    best = sorted((directory / "checkpoints").glob("best-*.ckpt"))
    return best[-1] if best else directory / "checkpoints" / "last.ckpt"


def predict(potential, R: np.ndarray, z: np.ndarray, device: str, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Energies [n] kcal/mol and forces [n, N, 3] kcal/mol/Å of frames R [n, N, 3] Å."""
    n_atoms = len(z)
    z_t = torch.tensor(z, dtype=torch.long, device=device)
    energies, forces = [], []
    for start in range(0, len(R), chunk):
        block = torch.tensor(R[start : start + chunk], dtype=torch.float64, device=device)
        b = block.shape[0]
        batch = torch.arange(b, device=device).repeat_interleave(n_atoms)
        energy, force = energy_and_forces(potential, block.reshape(-1, 3), z_t.repeat(b), batch, b)
        energies.append(energy.double().cpu().numpy())
        forces.append(force.double().cpu().numpy().reshape(b, n_atoms, 3))
    return np.concatenate(energies), np.concatenate(forces)


def coupling(
    potential, pos: np.ndarray, z: np.ndarray, donor: np.ndarray, acceptor: np.ndarray, device: str
) -> np.ndarray:
    """dF_acceptor / dR_donor [3 n_acceptor, 3 n_donor] (kcal/mol/Å²) of one frame, by autograd."""
    x = torch.tensor(pos, dtype=torch.float64, device=device).requires_grad_(True)
    z_t = torch.tensor(z, dtype=torch.long, device=device)
    batch = torch.zeros(len(z), dtype=torch.long, device=device)
    with torch.enable_grad():
        energy = potential(x, z_t, batch, 1).sum()
        (grad,) = torch.autograd.grad(energy, x, create_graph=True)
        forces = -grad[torch.as_tensor(acceptor, device=device)].reshape(-1)
        rows = []
        for component in forces:
            (row,) = torch.autograd.grad(component, x, retain_graph=True, allow_unused=True)
            row = torch.zeros_like(x) if row is None else row
            rows.append(row[torch.as_tensor(donor, device=device)].reshape(-1))
    return torch.stack(rows).detach().cpu().numpy()


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
    E, F = predict(potential, dataset.R[test], dataset.z, device)
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
