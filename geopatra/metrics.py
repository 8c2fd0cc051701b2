"""Error metrics accumulated over a whole epoch (exact, not averages of batch averages).

Names carry units: energies per molecule and per atom in kcal/mol, force components in kcal/mol/Å.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

METRIC_NAMES = (
    "energy_mae_kcal_mol",
    "energy_rmse_kcal_mol",
    "energy_mae_per_atom_kcal_mol",
    "energy_rmse_per_atom_kcal_mol",
    "force_mae_kcal_mol_A",
    "force_rmse_kcal_mol_A",
)


class ErrorAccumulator:
    """Sums of absolute and squared errors; ``compute()`` gives MAE/RMSE over everything added."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums = dict.fromkeys(("e_abs", "e_sq", "ea_abs", "ea_sq", "f_abs", "f_sq"), 0.0)
        self._n_molecules = 0
        self._n_components = 0

    def update(
        self,
        energy_pred: Tensor,
        energy_true: Tensor,
        atoms_per_molecule: Tensor,
        forces_pred: Tensor | None = None,
        forces_true: Tensor | None = None,
    ) -> None:
        """Add a batch: energies [n_mol] kcal/mol, atom counts [n_mol], forces [n_atoms, 3] kcal/mol/Å."""
        de = (energy_pred.detach() - energy_true.detach()).double()
        de_atom = de / atoms_per_molecule.double()
        self._sums["e_abs"] += de.abs().sum().item()
        self._sums["e_sq"] += de.square().sum().item()
        self._sums["ea_abs"] += de_atom.abs().sum().item()
        self._sums["ea_sq"] += de_atom.square().sum().item()
        self._n_molecules += de.numel()
        if forces_pred is not None and forces_true is not None:
            df = (forces_pred.detach() - forces_true.detach()).double()
            self._sums["f_abs"] += df.abs().sum().item()
            self._sums["f_sq"] += df.square().sum().item()
            self._n_components += df.numel()

    @property
    def n_molecules(self) -> int:
        """Molecules (frames) added since the last reset."""
        return self._n_molecules

    def compute(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """The metrics of :data:`METRIC_NAMES` (force metrics only if forces were added).

        ``reduce`` sums the accumulated sums and counts over processes (e.g. Lightning's
        ``strategy.reduce(..., reduce_op="sum")``), so that every rank reports the metric of all
        frames, not of its shard; None: this process's frames only.
        """
        totals = torch.tensor([*self._sums.values(), self._n_molecules, self._n_components], dtype=torch.float64)
        if reduce is not None:
            totals = reduce(totals).double().cpu()
        e_abs, e_sq, ea_abs, ea_sq, f_abs, f_sq, n_molecules, n_components = totals.tolist()
        n = max(n_molecules, 1.0)
        out = {
            "energy_mae_kcal_mol": e_abs / n,
            "energy_rmse_kcal_mol": math.sqrt(e_sq / n),
            "energy_mae_per_atom_kcal_mol": ea_abs / n,
            "energy_rmse_per_atom_kcal_mol": math.sqrt(ea_sq / n),
        }
        if n_components:
            out["force_mae_kcal_mol_A"] = f_abs / n_components
            out["force_rmse_kcal_mol_A"] = math.sqrt(f_sq / n_components)
        return out


def atoms_per_molecule(batch: Tensor, num_graphs: int) -> Tensor:
    """Number of atoms of each molecule of a batch [num_graphs]."""
    return torch.bincount(batch, minlength=num_graphs)
