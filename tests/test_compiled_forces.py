"""The compiled training step (CompiledEnergyAndForces, ``ForceFieldTask(compile=True)``): energies, forces
and parameter gradients equal the eager double-backward path, and a compiled fit trains like an eager one."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from geopatra.checkpoint import load_potential
from geopatra.cli import main
from geopatra.errors import ConfigurationError
from geopatra.models.compiled_forces import CompiledEnergyAndForces
from geopatra.models.forces import energy_and_forces
from geopatra.models.transformer import GeoPaTra
from geopatra.task import ForceFieldTask

ROOT = Path(__file__).parents[1]
DATA = ROOT / "tests" / "data"
TINY_CONFIG = ROOT / "tests" / "configs" / "geopatra_tiny.yaml"
TINY = {"num_features": 8, "num_tensor_features": 4, "lmax": 1, "num_layers": 1, "num_heads": 2, "num_rbf": 8,
        "radial_hidden": 8}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ethanol_batch(frames: int) -> tuple[torch.Tensor, ...]:
    """``frames`` ethanol geometries as one batch: positions [9 frames, 3] Å (float64), z, batch."""
    data = np.load(DATA / "md17_ethanol_2000.npz")
    z = torch.tensor(data["z"], dtype=torch.long)
    pos = torch.tensor(data["R"][:frames].reshape(-1, 3), dtype=torch.float64)
    return pos, z.repeat(frames), torch.arange(frames).repeat_interleave(len(z))


def tiny_model(**overrides) -> GeoPaTra:
    torch.manual_seed(0)
    model = GeoPaTra(**{**TINY, "equivariant_norm": True, "node_invariants": True, "radial_basis": "bessel",
                        **overrides}, dtype="float64")
    with torch.no_grad():
        torch.nn.init.normal_(model.readout.net[-1].weight, std=0.5)
    return model


def loss_and_gradients(model: GeoPaTra, energy: torch.Tensor, forces: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of a force + energy loss with respect to every parameter (the training step's backward)."""
    model.zero_grad()
    (forces.square().sum() + energy.square().sum()).backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_matches_eager(compiled: CompiledEnergyAndForces, model: GeoPaTra, frames: int) -> None:
    pos, z, batch = ethanol_batch(frames)
    energy, forces = compiled(pos, z, batch, frames)
    grads = loss_and_gradients(model, energy, forces)
    energy_ref, forces_ref = energy_and_forces(model, pos, z, batch, frames, training=True)
    grads_ref = loss_and_gradients(model, energy_ref, forces_ref)
    torch.testing.assert_close(energy, energy_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(forces, forces_ref, rtol=1e-10, atol=1e-10)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-9, atol=1e-10)
    assert any(float(g.abs().max()) > 0 for g in grads)


def test_inductor_energies_forces_and_parameter_gradients_match_eager() -> None:
    """The generated code (TorchInductor, a C++ compiler on this CPU), float64: to round-off."""
    model = tiny_model()
    compiled = CompiledEnergyAndForces(model)
    assert_matches_eager(compiled, model, frames=3)
    assert compiled.compiled, "compilation fell back to eager: see the warning in the log"


def test_a_new_batch_shape_recompiles_and_still_matches() -> None:
    """A shorter last batch (2 molecules after 3) is a new fixed shape: compiled again, same numbers."""
    model = tiny_model()
    compiled = CompiledEnergyAndForces(model, backend="aot_eager")
    for frames in (3, 2, 3):
        assert_matches_eager(compiled, model, frames)
    assert compiled.compiled


def test_neighbour_lists_cannot_be_compiled() -> None:
    model = tiny_model(cutoff=3.0, sparse_cutoff=True)
    with pytest.raises(ConfigurationError, match="neighbour lists"):
        ForceFieldTask(model, compile=True)
    with pytest.raises(ConfigurationError, match="neighbour lists"):
        CompiledEnergyAndForces(model, backend="aot_eager")(*ethanol_batch(1), 1)
    ForceFieldTask(tiny_model(cutoff=3.0, sparse_cutoff=False), compile=True)  # a masked dense layout is fine


def test_compiler_failure_falls_back_to_eager_with_a_warning(broken_torch_compile, caplog) -> None:
    model = tiny_model()
    compiled = CompiledEnergyAndForces(model)
    with caplog.at_level(logging.WARNING, logger="geopatra.models.compiled_forces"):
        assert_matches_eager(compiled, model, frames=2)
    assert not compiled.compiled and "training eagerly" in caplog.text


def test_compiled_fit_trains_like_an_eager_one(tmp_path, monkeypatch, caplog) -> None:
    """Three epochs of ``geopatra fit`` (EMA, gradient clipping, a shorter last batch) with and without
    ``compile``, float64: the same weights at the end. The graph is traced by AOTAutograd as in training
    but not code-generated (the ``aot_eager`` backend: seconds, not minutes)."""
    real_compile = torch.compile

    def traced_only(function, **kwargs):
        return real_compile(function, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", traced_only)
    weights = []
    caplog.set_level(logging.WARNING, logger="geopatra.models.compiled_forces")
    for compile in (False, True):
        run = tmp_path / f"compile_{compile}"
        main(["fit", "--config", str(TINY_CONFIG), "--data.path", str(DATA / "md17_ethanol_2000.npz"),
              "--data.n_train", "22", "--model.init_args.potential.init_args.dtype", "float64",
              "--model.init_args.compile", str(compile).lower(), "--trainer.default_root_dir", str(run)])
        potential, _ = load_potential(run / "checkpoints" / "last.ckpt")
        weights.append(potential.state_dict())
    assert "training eagerly" not in caplog.text, "the compiled fit fell back to the eager step"
    assert weights[0].keys() == weights[1].keys()
    last_readout = max(name for name in weights[0] if name.startswith("readout.net.") and name.endswith(".weight"))
    assert float(weights[0][last_readout].abs().max()) > 0, "the readout starts at zero: nothing was trained"
    for name, eager in weights[0].items():
        torch.testing.assert_close(weights[1][name], eager, rtol=1e-7, atol=1e-9, msg=name)
