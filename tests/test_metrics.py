"""Metrics on a case small enough to check by hand."""

import math

import pytest
import torch

from geopatra.metrics import ErrorAccumulator, atoms_per_molecule


def test_metrics_by_hand_over_two_batches():
    acc = ErrorAccumulator()
    # batch 1: molecule of 2 atoms, energy error +2; forces errors 1 and -3 (others 0)
    acc.update(
        torch.tensor([12.0]), torch.tensor([10.0]), torch.tensor([2]),
        torch.tensor([[1.0, 0, 0], [0, -3.0, 0]]), torch.zeros(2, 3),
    )
    # batch 2: molecule of 4 atoms, energy error -4; one force error 2
    forces = torch.zeros(4, 3)
    forces[3, 2] = 2.0
    acc.update(torch.tensor([6.0]), torch.tensor([10.0]), torch.tensor([4]), forces, torch.zeros(4, 3))
    m = acc.compute()
    assert m["energy_mae_kcal_mol"] == pytest.approx(3.0)  # (2 + 4) / 2
    assert m["energy_rmse_kcal_mol"] == pytest.approx(math.sqrt((4 + 16) / 2))
    assert m["energy_mae_per_atom_kcal_mol"] == pytest.approx((1.0 + 1.0) / 2)  # 2/2, 4/4
    assert m["force_mae_kcal_mol_A"] == pytest.approx((1 + 3 + 2) / 18)  # 6 atoms x 3 components
    assert m["force_rmse_kcal_mol_A"] == pytest.approx(math.sqrt((1 + 9 + 4) / 18))
    acc.reset()
    acc.update(torch.tensor([1.0]), torch.tensor([1.0]), torch.tensor([3]))
    assert acc.compute()["energy_mae_kcal_mol"] == 0.0
    assert "force_mae_kcal_mol_A" not in acc.compute()


def test_atoms_per_molecule():
    batch = torch.tensor([0, 0, 1, 1, 1, 3])
    assert atoms_per_molecule(batch, 4).tolist() == [2, 3, 0, 1]
