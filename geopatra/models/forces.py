"""The single energy -> forces path every model, the training loop, the calculator and the experiments
use: a batch (:func:`energy_and_forces`), frames of one molecule (:func:`predict_frames`), a committee
(:func:`committee_energy_and_forces`) and second derivatives (:func:`force_jacobian`).

Forces are F = -dE/dR by autograd. The double-backward graph (needed when a force loss is
backpropagated to the parameters) is built only when ``training`` is true.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def energy_and_forces(
    potential: torch.nn.Module,
    pos: Tensor,
    z: Tensor,
    batch: Tensor,
    num_graphs: int,
    *,
    training: bool = False,
    compute_forces: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Energies [num_graphs] (kcal/mol) and forces [n_atoms, 3] (kcal/mol/Å) of a batch.

    ``pos`` is never modified: gradients are taken with respect to a detached copy. ``E.sum()`` is a
    valid target for the gradient only because molecules of a batch do not interact (tested).
    Outside training the outputs are detached.
    """
    if not compute_forces:
        with torch.set_grad_enabled(training):
            energy = potential(pos, z, batch, num_graphs)
        return (energy if training else energy.detach()), None
    pos = pos.detach().requires_grad_(True)
    with torch.enable_grad():
        energy = potential(pos, z, batch, num_graphs)
        (grad,) = torch.autograd.grad(
            energy.sum(), pos, create_graph=training, retain_graph=training
        )
    forces = -grad
    if not training:
        energy, forces = energy.detach(), forces.detach()
    return energy, forces


def committee_energy_and_forces(
    members: Sequence[torch.nn.Module], positions: np.ndarray, z: Tensor, batch: Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Energy [n_members] (kcal/mol) and forces [n_members, n_atoms, 3] (kcal/mol/Å), float64, of one
    molecule (positions [n_atoms, 3] Å; ``z``, ``batch`` [n_atoms] on the members' device) by each
    member of a committee, each computing in its own dtype."""
    energies, forces = [], []
    for member in members:
        pos = torch.as_tensor(positions, dtype=member.compute_dtype, device=z.device)
        energy, force = energy_and_forces(member, pos, z, batch, 1)
        energies.append(float(energy.sum()))
        forces.append(force.double().cpu().numpy())
    return np.array(energies), np.stack(forces)


def predict_frames(
    potential: torch.nn.Module, R: np.ndarray | Tensor, z: np.ndarray | Tensor, *, chunk: int = 32,
    device: torch.device | str | None = None, dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Energies [M] (kcal/mol) and forces [M, N, 3] (kcal/mol/Å), float64 and detached, of frames ``R``
    [M, N, 3] (Å) of one molecule with atomic numbers ``z`` [N], ``chunk`` frames per batch.

    Computed on ``device`` in ``dtype`` (default: where the potential's buffers are, in its
    ``compute_dtype``); the outputs stay there."""
    if device is None:
        buffer = next(potential.buffers(), None)
        device = buffer.device if buffer is not None else torch.device("cpu")
    dtype = dtype if dtype is not None else potential.compute_dtype
    R = torch.as_tensor(R)
    n_atoms = R.shape[1]
    z = torch.as_tensor(z, dtype=torch.long, device=device).reshape(-1)
    energies, forces = [], []
    for start in range(0, len(R), chunk):
        block = R[start : start + chunk].to(device, dtype)
        b = block.shape[0]
        batch = torch.arange(b, device=device).repeat_interleave(n_atoms)
        energy, force = energy_and_forces(potential, block.reshape(-1, 3), z.repeat(b), batch, b)
        energies.append(energy.double())
        forces.append(force.double().reshape(b, n_atoms, 3))
    if not energies:
        return torch.zeros(0, dtype=torch.float64, device=device), torch.zeros(0, n_atoms, 3, dtype=torch.float64,
                                                                                 device=device)
    return torch.cat(energies), torch.cat(forces)


def force_jacobian(
    potential: torch.nn.Module, pos: Tensor, z: Tensor, rows: Tensor, cols: Tensor
) -> Tensor:
    """``dF_rows / dR_cols`` [3 len(rows), 3 len(cols)] (kcal/mol/Å²) of one molecule (positions
    ``pos`` [N, 3] Å, atomic numbers ``z`` [N]) by double autograd: how the forces on atoms ``rows``
    respond to moving atoms ``cols``, in the order (atom, xyz). Zero where they do not couple."""
    x = pos.detach().requires_grad_(True)
    batch = torch.zeros(len(z), dtype=torch.long, device=pos.device)
    with torch.enable_grad():
        energy = potential(x, z, batch, 1).sum()
        (grad,) = torch.autograd.grad(energy, x, create_graph=True)
        forces = -grad[rows].reshape(-1)
        jacobian = []
        for component in forces:
            (row,) = torch.autograd.grad(component, x, retain_graph=True, allow_unused=True)
            row = torch.zeros_like(x) if row is None else row
            jacobian.append(row[cols].reshape(-1))
    return torch.stack(jacobian).detach()
