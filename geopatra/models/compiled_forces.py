"""Energies and forces of training batches from one ``torch.compile``'d graph.

A force loss needs the gradient of F = -dE/dR with respect to the parameters: a double backward, which
a compiled graph does not support (AOTAutograd differentiates it once). Taking F with
``torch.func.grad`` inside the compiled function makes E and F the outputs of one forward graph, whose
single backward is the loss's gradient. The graph has fixed shapes: the batch's padding
(:meth:`Potential.batch_layout`) is computed eagerly before each call, and each new batch shape
(e.g. a shorter last batch) compiles once more. Compilation (TorchInductor; a C++ compiler on CPU)
takes minutes on the first batch and is part of the training time.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from geopatra.errors import ConfigurationError
from geopatra.models.forces import energy_and_forces
from geopatra.models.potential import Potential

logger = logging.getLogger(__name__)


class CompiledEnergyAndForces:
    """``(pos, z, batch, num_graphs) -> (E [num_graphs] kcal/mol, F [n_atoms, 3] kcal/mol/Å)`` with the
    graph to the parameters kept (training), equal to ``energy_and_forces(..., training=True)`` to
    round-off. Falls back to that eager path, with a warning, if the compiler fails.

    Args:
        potential: a potential whose :meth:`~Potential.batch_layout` is not None.
        backend: ``torch.compile`` backend ("inductor"; "aot_eager" traces the same graph without
            generating code, for tests).
    """

    def __init__(self, potential: Potential, backend: str = "inductor") -> None:
        self.potential = potential
        self._compiled = torch.compile(self._energy_and_forces, backend=backend, dynamic=False)

    @property
    def compiled(self) -> bool:
        """Whether calls run compiled code (False once a compilation failed)."""
        return self._compiled is not None

    def _energy_and_forces(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int,
                           layout: dict) -> tuple[Tensor, Tensor]:
        def total_energy(positions: Tensor) -> tuple[Tensor, Tensor]:
            energy = self.potential(positions, z, batch, num_graphs, **layout)
            return energy.sum(), energy

        grad, energy = torch.func.grad(total_energy, has_aux=True)(pos)
        return energy, -grad

    def __call__(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int) -> tuple[Tensor, Tensor]:
        layout = self.potential.batch_layout(batch, num_graphs)
        if layout is None:
            raise ConfigurationError(
                f"{type(self.potential).__name__} cannot be compiled for training with this configuration "
                "(its pair layout depends on the positions, e.g. neighbour lists within a cutoff); "
                "train it without compile"
            )
        if self._compiled is not None:
            try:
                return self._compiled(pos.detach(), z, batch, num_graphs, layout)
            except torch._dynamo.exc.TorchDynamoException as error:  # a compiler failure, not a bad input
                logger.warning("torch.compile failed (%s: %s); training eagerly", type(error).__name__, error)
                self._compiled = None
        return energy_and_forces(self.potential, pos, z, batch, num_graphs, training=True)
