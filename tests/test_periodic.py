"""Making a molecule whole in a periodic box: bonds, separate fragments, slabs, and what is refused."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from geopatra.errors import PeriodicSystemError
from geopatra.periodic import make_whole

CELL = np.array([[9.0, 0.0, 0.0], [1.5, 8.0, 0.0], [0.0, 0.0, 10.0]])  # triclinic, Å


def _wrapped(positions: np.ndarray, cell: np.ndarray, pbc=(True, True, True)) -> np.ndarray:
    fractional = positions @ np.linalg.inv(cell)
    fractional = np.where(pbc, fractional % 1.0, fractional)
    return fractional @ cell


def _same_up_to_translation(a: np.ndarray, b: np.ndarray) -> bool:
    return np.allclose(a - a[0], b - b[0], atol=1e-10)


def test_a_molecule_cut_by_every_face_is_joined_again() -> None:
    ethanol = molecule("CH3CH2OH")
    positions = ethanol.positions - ethanol.positions[2] + 1e-3  # an atom at the corner
    wrapped = _wrapped(positions, CELL)
    assert np.ptp(wrapped @ np.linalg.inv(CELL), axis=0).min() > 0.5  # it was cut
    assert _same_up_to_translation(make_whole(wrapped, ethanol.numbers, CELL, np.ones(3, bool)), positions)


def test_fragments_are_placed_next_to_each_other() -> None:
    dimer = molecule("H2O") + molecule("H2O")
    dimer.positions[3:] += [2.9, 0.0, 0.0]  # a hydrogen-bonded pair: no covalent bond between them
    positions = dimer.positions - dimer.positions[0] + [8.5, 4.0, 5.0]
    whole = make_whole(_wrapped(positions, CELL), dimer.numbers, CELL, np.ones(3, bool))
    assert _same_up_to_translation(whole, positions)


def test_only_periodic_directions_are_unwrapped() -> None:
    water = molecule("H2O")
    cell = np.array([[6.0, 0, 0], [0, 6.0, 0], [0, 0, 0]])  # a slab: no third vector
    positions = water.positions + np.array([0.0, 0.0, 30.0])  # far out along the non-periodic axis
    pbc = np.array([True, True, False])
    whole = make_whole(_wrapped(positions, np.diag([6.0, 6.0, 1.0]), pbc), water.numbers, cell, pbc)
    assert _same_up_to_translation(whole, positions)
    assert whole[:, 2] == pytest.approx(positions[:, 2])


def test_what_cannot_be_made_whole_is_refused() -> None:
    chain = molecule("C6H6")  # about 5 Å across: in a 4 Å box it meets its own image
    with pytest.raises(PeriodicSystemError, match="own image"):
        make_whole(chain.positions, chain.numbers, np.diag([4.0, 20.0, 20.0]), np.ones(3, bool))
    with pytest.raises(PeriodicSystemError, match="singular"):
        make_whole(chain.positions, chain.numbers, np.diag([10.0, 10.0, 0.0]), np.ones(3, bool))
