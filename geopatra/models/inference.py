"""A potential prepared for many energy + force calls (molecular dynamics, optimisation), not training.

Training needs the parameters' gradients and a double-backward graph; MD needs neither. An
:class:`InferencePotential` freezes the parameters, so autograd records only the path from the positions
to the energy, and can ``torch.compile`` the energy function (TorchInductor; on CPU it needs a C++
compiler). Compilation specialises to the atom count: the first call, and the first after the molecule
changes size, compile (tens of seconds); later calls reuse the compiled code. Where compilation is not
available or fails, the potential falls back to eager execution with a warning: the numbers are the
same up to float round-off either way.
"""

from __future__ import annotations

import logging

import torch
import torch._dynamo
from torch import Tensor

from geopatra.models.potential import Potential

logger = logging.getLogger(__name__)


class InferencePotential(torch.nn.Module):
    """``forward(pos, z, batch, num_graphs) -> E`` of ``potential`` (same units and shapes), frozen and
    optionally compiled. The wrapped potential's parameters get ``requires_grad = False`` (it is meant to
    be owned by the wrapper, e.g. loaded from a checkpoint for MD).

    Args:
        potential: any geopatra :class:`Potential`.
        compile: ``torch.compile`` the energy function (fixed shapes; eager fallback on failure).
    """

    def __init__(self, potential: Potential, compile: bool = False) -> None:
        super().__init__()
        self.potential = potential.eval()
        for parameter in self.potential.parameters():
            parameter.requires_grad_(False)
        self._compiled = torch.compile(self.potential, dynamic=False) if compile else None

    @property
    def compiled(self) -> bool:
        """Whether calls run compiled code (False once a compilation failed)."""
        return self._compiled is not None

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.potential.compute_dtype

    def forward(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(pos, z, batch, num_graphs)
            except torch._dynamo.exc.TorchDynamoException as error:  # a compiler failure, not a bad input
                logger.warning("torch.compile failed (%s: %s); running eagerly", type(error).__name__, error)
                self._compiled = None
        return self.potential(pos, z, batch, num_graphs)
