"""The single energy -> forces helper every model and the training loop use.

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
