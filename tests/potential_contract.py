"""The contract every geopatra potential keeps, as a test class to inherit (in the manner of NequIP's
model test mixin): O(3) including reflections, translation, atom permutation, batch equals single, no
gradient across frames, forces = -dE/dR by central differences, and a state-dict round trip; all in
float64 through the one prediction path (:func:`geopatra.models.forces.energy_and_forces`).

A subclass provides three fixtures:

- ``potential``: the model, float64, in eval mode, ready to predict (fitted where it must be);
- ``fresh_potential``: an unfitted model of the same constructor arguments (for the state-dict test);
- ``structures``: a list of at least two (positions [n_atoms, 3] Å, atomic numbers [n_atoms]) the model
  can describe, the first of them used where one is enough;

and may override :meth:`PotentialContract.permutation` (default: any reordering of the atoms, with
their atomic numbers) when the model is invariant to fewer permutations (sGDML: its symmetries).
"""

from __future__ import annotations

import numpy as np
import torch
from e3nn import o3

from geopatra.models.forces import energy_and_forces

F64 = torch.float64


def batch_of(structures: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype = F64):
    """(pos [n_atoms, 3], z [n_atoms], batch [n_atoms], n_molecules) of several structures."""
    pos = torch.tensor(np.concatenate([p for p, _ in structures]), dtype=dtype)
    z = torch.tensor(np.concatenate([z for _, z in structures]), dtype=torch.long)
    batch = torch.cat([torch.full((len(z),), i, dtype=torch.long) for i, (_, z) in enumerate(structures)])
    return pos, z, batch, len(structures)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest entry of ``b``."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


class PotentialContract:
    """Inherit and provide the fixtures of the module docstring."""

    #: relative tolerance of exact identities in float64
    tol = 1e-10

    def permutation(self, potential, z: torch.Tensor) -> torch.Tensor:
        """An atom order the model must be invariant under (energy) and equivariant with (forces)."""
        return torch.randperm(len(z), generator=torch.Generator().manual_seed(0))

    def test_o3_including_reflections_and_translation(self, potential, structures) -> None:
        pos, z, batch, n = batch_of(structures)
        energy, forces = energy_and_forces(potential, pos, z, batch, n)
        generator = torch.Generator().manual_seed(1)
        for sign in (1.0, -1.0):  # -1: a rotation times the inversion, so reflections are covered
            rot = o3.rand_matrix(dtype=F64) * sign
            shift = torch.randn(3, dtype=F64, generator=generator) * 5.0
            energy2, forces2 = energy_and_forces(potential, pos @ rot.T + shift, z, batch, n)
            assert rel_err(energy2, energy) <= self.tol
            assert rel_err(forces2, forces @ rot.T) <= self.tol

    def test_atom_permutation(self, potential, structures) -> None:
        pos, z, batch, n = batch_of(structures[:1])
        perm = self.permutation(potential, z)
        energy, forces = energy_and_forces(potential, pos, z, batch, n)
        energy_p, forces_p = energy_and_forces(potential, pos[perm], z[perm], batch, n)
        assert rel_err(energy_p, energy) <= self.tol
        assert rel_err(forces_p, forces[perm]) <= self.tol

    def test_batch_equals_one_at_a_time(self, potential, structures) -> None:
        energy, forces = energy_and_forces(potential, *batch_of(structures))
        sizes = [len(z) for _, z in structures]
        for i, (part, structure) in enumerate(zip(torch.split(forces, sizes), structures)):
            e_i, f_i = energy_and_forces(potential, *batch_of([structure]))
            assert rel_err(energy[i : i + 1], e_i) <= self.tol
            assert rel_err(part, f_i) <= self.tol

    def test_no_gradient_across_frames(self, potential, structures) -> None:
        pos, z, batch, n = batch_of(structures[:2])
        pos.requires_grad_(True)
        energy = potential(pos, z, batch, n)
        (grad,) = torch.autograd.grad(energy[0], pos)
        assert torch.all(grad[batch == 1] == 0)
        assert grad[batch == 0].abs().max() > 0

    def test_forces_match_central_differences(self, potential, structures) -> None:
        pos, z, batch, n = batch_of(structures[:1])
        _, forces = energy_and_forces(potential, pos, z, batch, n)
        h = 1e-5  # Å
        scale = max(1.0, float(forces.abs().max()))
        for atom, axis in [(0, 0), (2, 1), (len(z) // 2, 2), (len(z) - 1, 0)]:
            plus, minus = pos.clone(), pos.clone()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            with torch.no_grad():
                numeric = -(potential(plus, z, batch, n) - potential(minus, z, batch, n)) / (2 * h)
            assert abs(float(numeric) - float(forces[atom, axis])) <= 1e-6 * scale

    def test_state_dict_round_trip(self, potential, fresh_potential, structures) -> None:
        fresh_potential.load_state_dict(potential.state_dict())
        fresh_potential.eval()
        args = batch_of(structures)
        e1, f1 = energy_and_forces(potential, *args)
        e2, f2 = energy_and_forces(fresh_potential, *args)
        assert torch.equal(e1, e2) and torch.equal(f1, f2)
