"""Committees of checkpoints: mean energy and forces, their spread, and its use as a stop signal in MD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from geopatra import GeoPatraCalculator
from geopatra.data import read_dataset
from geopatra.errors import CheckpointError
from geopatra.md import run_md

TINY_GEOPATRA = Path(__file__).parent / "configs" / "geopatra_tiny.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def second_seed(bundled_checkpoints, tmp_path_factory):
    """The bundled GeoPaTra checkpoint's recipe trained with another seed."""
    from geopatra.cli import main

    run = tmp_path_factory.mktemp("bundled_geopatra_seed1")
    main(["fit", "--config", str(TINY_GEOPATRA), "--data.path", "bundled", "--data.n_train", "128",
          "--data.n_val", "8", "--data.n_test", "8", "--trainer.max_epochs", "8", "--seed_everything", "1",
          "--trainer.default_root_dir", str(run)])
    return run / "checkpoints" / "last.ckpt"


def _frames(indices) -> list[Atoms]:
    ds = read_dataset("bundled")
    return [Atoms(numbers=ds.z, positions=ds.R[i]) for i in indices]


def test_identical_members_have_zero_spread(bundled_checkpoints):
    ckpt = bundled_checkpoints["geopatra"]
    (atoms,) = _frames([0])
    single, committee = GeoPatraCalculator(ckpt), GeoPatraCalculator([ckpt, ckpt])
    atoms.calc = single
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = committee
    assert atoms.get_potential_energy() == pytest.approx(e, rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), f, rtol=1e-12, atol=1e-12)
    assert committee.results["energy_std"] == 0.0 and committee.results["max_force_std"] == 0.0


def test_spread_grows_away_from_the_training_data(bundled_checkpoints, second_seed):
    committee = GeoPatraCalculator([bundled_checkpoints["geopatra"], second_seed])
    split = committee.record.molecules[0].split["train"][:4]
    near, far = [], []
    rng = np.random.default_rng(0)
    for atoms in _frames(split):
        atoms.calc = committee
        atoms.get_forces()
        near.append(committee.results["max_force_std"])
        atoms.positions += rng.normal(scale=0.25, size=atoms.positions.shape)  # Å: far off the data
        atoms.get_forces()
        far.append(committee.results["max_force_std"])
    assert min(near) > 0.0
    assert np.mean(far) > 2.0 * np.mean(near)


def test_members_of_different_kinds_are_refused(bundled_checkpoints):
    with pytest.raises(CheckpointError, match="members must match"):
        GeoPatraCalculator([bundled_checkpoints["geopatra"], bundled_checkpoints["sgdml"]])
    with pytest.raises(CheckpointError, match="no checkpoint"):
        GeoPatraCalculator([])


def test_md_logs_the_spread_and_stops_on_it(bundled_checkpoints, second_seed):
    (atoms,) = _frames([0])
    atoms.calc = GeoPatraCalculator([bundled_checkpoints["geopatra"], second_seed])
    report, series = run_md(atoms, temperature=300.0, steps=20, progress=False)
    assert len(series["force_spread"]) == report.steps + 1
    assert report.max_force_spread_ev_per_angstrom == pytest.approx(series["force_spread"].max())
    threshold = 0.5 * float(series["force_spread"][0])  # exceeded at the first frame
    atoms = _frames([0])[0]
    atoms.calc = GeoPatraCalculator([bundled_checkpoints["geopatra"], second_seed])
    stopped, _ = run_md(atoms, temperature=300.0, steps=20, progress=False, max_force_spread=threshold)
    assert stopped.status == "unphysical" and not stopped.exploded and stopped.steps == 0
    assert "committee force spread" in stopped.unphysical[0]
