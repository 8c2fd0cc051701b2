"""Per-atom energy readout and the data statistics (per-element energy shift, force scale).

Final energy of a molecule: E = scale * sum_i readout_i + sum_i shift[z_i]  [kcal/mol].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from geopatra.errors import DataError
from geopatra.models.transformer.radial import variance_preserving_mlp


class ScalarReadout(nn.Module):
    """MLP from the invariant (0e) features [n_atoms, num_features] to dimensionless per-atom
    energies [n_atoms] (multiplied by the force scale in the model)."""

    def __init__(self, num_features: int, hidden: int) -> None:
        super().__init__()
        self.net = variance_preserving_mlp([num_features, hidden, 1])
        # Start from E = sum of element shifts (the training mean): an O(1) random readout times the
        # force scale would put energies hundreds of kcal/mol off and swamp the force signal early.
        nn.init.zeros_(self.net[-1].weight)

    def forward(self, scalars: Tensor) -> Tensor:
        return self.net(scalars).squeeze(-1)


def fit_element_shifts(compositions: Sequence[np.ndarray], energies: Sequence[np.ndarray], max_z: int) -> np.ndarray:
    """Per-element energy shifts [max_z + 1] (kcal/mol) with E ≈ sum_i shift[z_i], by least squares.

    Args:
        compositions: atomic numbers [n_atoms_k] of each molecule k.
        energies: energies [n_frames_k] of the frames of molecule k, kcal/mol.
        max_z: largest atomic number the result has room for.

    Returns:
        shift [max_z + 1]; zero for elements absent from the data. When the compositions do not
        determine the shifts (e.g. a single molecule), the minimum-norm solution is returned: it
        still reproduces the mean energy of every molecule.
    """
    if len(compositions) != len(energies) or not compositions:
        raise DataError(
            f"fit_element_shifts: need one energy array per composition, got "
            f"{len(compositions)} compositions and {len(energies)} energy arrays"
        )
    elements = np.unique(np.concatenate([np.asarray(z, dtype=np.int64) for z in compositions]))
    if elements.min() < 1 or elements.max() > max_z:
        raise DataError(f"atomic numbers must lie in 1..{max_z}, got {elements.min()}..{elements.max()}")
    rows, targets = [], []
    for z, e in zip(compositions, energies):
        counts = np.array([(np.asarray(z) == el).sum() for el in elements], dtype=np.float64)
        e = np.asarray(e, dtype=np.float64).reshape(-1)
        rows.append(np.repeat(counts[None, :], len(e), axis=0))
        targets.append(e)
    A, y = np.concatenate(rows), np.concatenate(targets)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    shift = np.zeros(max_z + 1)
    shift[elements] = coef
    return shift


def force_rms(forces: Sequence[np.ndarray]) -> float:
    """Root mean square of all force components [kcal/mol/Å] of the given force arrays [..., 3]."""
    total = sum(float(np.square(np.asarray(f, dtype=np.float64)).sum()) for f in forces)
    count = sum(int(np.asarray(f).size) for f in forces)
    if count == 0:
        raise DataError("force_rms: no force components given")
    return float(np.sqrt(total / count))
