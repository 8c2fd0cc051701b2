"""InferencePotential: frozen, optionally compiled energies and forces equal the model's; the calculator
and ``geopatra md --compile`` use it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from geopatra.calculator import GeoPatraCalculator
from geopatra.models.forces import energy_and_forces
from geopatra.models.inference import InferencePotential
from geopatra.models.transformer import GeoPaTra

DATA = Path(__file__).parent / "data"
CHECKPOINT = DATA / "checkpoint_geopatra_format1.ckpt"
TINY = {"num_features": 8, "num_tensor_features": 4, "lmax": 1, "num_layers": 1, "num_heads": 2, "num_rbf": 8,
        "radial_hidden": 8}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ethanol_batch() -> tuple[torch.Tensor, ...]:
    data = np.load(DATA / "md17_ethanol_2000.npz")
    z = torch.tensor(data["z"], dtype=torch.long)
    pos = torch.tensor(data["R"][7], dtype=torch.float64)
    return pos, z, torch.zeros(len(z), dtype=torch.long)


def _model(**overrides) -> GeoPaTra:
    torch.manual_seed(0)
    model = GeoPaTra(**{**TINY, **overrides}, dtype="float64").eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.readout.net[-1].weight, std=0.5)
    return model


def test_frozen_potential_gives_the_same_energy_and_forces(ethanol_batch) -> None:
    model = _model()
    pos, z, batch = ethanol_batch
    e_ref, f_ref = energy_and_forces(model, pos, z, batch, 1)
    frozen = InferencePotential(model)
    assert not any(p.requires_grad for p in model.parameters())
    e, f = energy_and_forces(frozen, pos, z, batch, 1)
    assert torch.equal(e, e_ref) and torch.equal(f, f_ref)
    assert frozen.compute_dtype == torch.float64 and not frozen.compiled


def test_compiled_potential_matches_eager_to_round_off(ethanol_batch) -> None:
    """torch.compile (TorchInductor, a C++ compiler on this CPU) of the energy; forces by autograd
    through the compiled graph. Float64: agreement to 1e-10 relative."""
    model = _model(equivariant_norm=True, node_invariants=True, radial_basis="bessel")
    pos, z, batch = ethanol_batch
    _, f_ref = energy_and_forces(model, pos, z, batch, 1)
    compiled = InferencePotential(model, compile=True)
    for shift in (0.0, 0.01):  # a second geometry of the same size reuses the compiled code
        e, f = energy_and_forces(compiled, pos + shift * torch.sin(pos), z, batch, 1)
        e_eager, f_eager = energy_and_forces(model, pos + shift * torch.sin(pos), z, batch, 1)
        torch.testing.assert_close(e, e_eager, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(f, f_eager, rtol=1e-10, atol=1e-10)
    assert compiled.compiled, "compilation fell back to eager: see the warning in the log"
    assert not torch.equal(f, f_ref)  # the second geometry really differs


def test_compiler_failure_falls_back_to_eager_with_a_warning(ethanol_batch, broken_torch_compile, caplog) -> None:
    model = _model()
    pos, z, batch = ethanol_batch
    potential = InferencePotential(model, compile=True)
    with caplog.at_level(logging.WARNING, logger="geopatra.models.inference"):
        energy = potential(pos, z, batch, 1)
    assert "no C++ compiler" in caplog.text and not potential.compiled
    assert torch.equal(energy, model(pos, z, batch, 1))


def test_bad_input_is_raised_not_swallowed_by_the_fallback(ethanol_batch, monkeypatch) -> None:
    def compiler(module, **kwargs):
        def run(*args):
            raise ValueError("batch must be sorted")
        return run

    monkeypatch.setattr(torch, "compile", compiler)
    potential = InferencePotential(_model(), compile=True)
    pos, z, batch = ethanol_batch
    with pytest.raises(ValueError, match="sorted"):
        potential(pos, z, batch, 1)
    assert potential.compiled  # a user error does not switch compilation off


def test_calculator_with_compile_gives_the_same_forces() -> None:
    data = np.load(DATA / "md17_ethanol_2000.npz")
    atoms = Atoms(numbers=data["z"], positions=data["R"][3])
    eager, compiled = GeoPatraCalculator(CHECKPOINT), GeoPatraCalculator(CHECKPOINT, compile=True)
    atoms.calc = eager
    f_eager, e_eager = atoms.get_forces(), atoms.get_potential_energy()
    atoms.calc = compiled
    f_compiled, e_compiled = atoms.get_forces(), atoms.get_potential_energy()
    assert compiled.evaluators[0].compiled
    np.testing.assert_allclose(f_compiled, f_eager, rtol=1e-4, atol=1e-5)  # float32 model: round-off only
    assert e_compiled == pytest.approx(e_eager, rel=1e-6)


def test_md_cli_runs_compiled(tmp_path, caplog) -> None:
    """``geopatra md --compile``: the run ends healthy and no compiler fallback is logged."""
    from ase.io import write

    from geopatra.cli import main

    data = np.load(DATA / "md17_ethanol_2000.npz")
    structure = tmp_path / "ethanol.xyz"
    write(structure, Atoms(numbers=data["z"], positions=data["R"][3]))
    with caplog.at_level(logging.WARNING, logger="geopatra.models.inference"):
        status = main(["md", "--checkpoint", str(CHECKPOINT), "--structure", str(structure), "--steps", "10",
                       "--temperature", "100", "--compile", "--output", str(tmp_path / "md")])
    assert status == 0
    assert (tmp_path / "md" / "report.json").is_file()
    assert "torch.compile failed" not in caplog.text
