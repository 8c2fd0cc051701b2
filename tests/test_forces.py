"""The shared prediction path: frames of one molecule in chunks, and the force Jacobian."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_transformer import small_model

from geopatra.models.forces import energy_and_forces, force_jacobian, predict_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ethanol() -> tuple[np.ndarray, np.ndarray]:
    data = np.load(Path(__file__).parent / "data" / "md17_ethanol_2000.npz")
    return data["R"][:500:100], data["z"]


def test_frames_in_chunks_equal_one_frame_at_a_time(ethanol) -> None:
    R, z = ethanol
    model = small_model()
    energies, forces = predict_frames(model, R, z, chunk=2)  # chunks of 2, 2 and 1 frames
    assert energies.shape == (5,) and forces.shape == (5, 9, 3) and energies.dtype == torch.float64
    z_t = torch.as_tensor(z, dtype=torch.long)
    for frame in range(5):
        pos = torch.as_tensor(R[frame], dtype=torch.float64)
        e, f = energy_and_forces(model, pos, z_t, torch.zeros(9, dtype=torch.long), 1)
        torch.testing.assert_close(energies[frame], e[0], rtol=1e-12, atol=0)
        torch.testing.assert_close(forces[frame], f, rtol=1e-10, atol=1e-12)
    empty_e, empty_f = predict_frames(model, R[:0], z)
    assert empty_e.shape == (0,) and empty_f.shape == (0, 9, 3)


def test_force_jacobian_is_minus_the_symmetric_hessian_and_matches_finite_differences(ethanol) -> None:
    R, z = ethanol
    model = small_model()
    pos, z_t = torch.as_tensor(R[0], dtype=torch.float64), torch.as_tensor(z, dtype=torch.long)
    every = torch.arange(9)
    full = force_jacobian(model, pos, z_t, every, every)  # [27, 27]
    torch.testing.assert_close(full, full.T, rtol=0, atol=1e-9 * float(full.abs().max()))
    rows, cols = torch.tensor([8, 2]), torch.tensor([0, 5, 3])
    block = force_jacobian(model, pos, z_t, rows, cols)
    assert block.shape == (6, 9)
    torch.testing.assert_close(block, full.view(9, 3, 9, 3)[rows][:, :, cols].reshape(6, 9), rtol=1e-10, atol=1e-12)
    h = 1e-5  # central differences of the forces on `rows` as each coordinate of `cols` moves
    batch = torch.zeros(9, dtype=torch.long)
    for c, atom in enumerate(cols.tolist()):
        for k in range(3):
            shifted = [pos.clone(), pos.clone()]
            shifted[0][atom, k] += h
            shifted[1][atom, k] -= h
            plus, minus = (energy_and_forces(model, p, z_t, batch, 1)[1][rows].reshape(-1) for p in shifted)
            torch.testing.assert_close(block[:, 3 * c + k], (plus - minus) / (2 * h), rtol=1e-5, atol=1e-6)
