"""The sGDML kernel shared across the processes of a ``torch.distributed`` group.

Each process (rank) owns a contiguous block of the training frames and computes the rows of ``K v``
and of the Nyström columns ``K[:, idx]`` for its frames (:meth:`SGDMLKernel.matmat` and
:meth:`SGDMLKernel.columns` with ``rows``); the blocks are all-gathered, so every rank holds the same
full result. The solver then runs the same arithmetic on every rank in lockstep: its dot products
need no further reduction, and its checkpoints (written atomically, the same state by every rank)
resume on any number of processes. Work and memory of the products divide by the number of ranks;
the diagonal (``O(M S N²)``) is computed whole on every rank.

Any backend with ``all_gather`` of float64 tensors works: gloo on CPUs (tested), NCCL on GPUs (one
device per rank, never run here). The exact (Cholesky) solve does not distribute.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from geopatra.models.sgdml.kernel import SGDMLKernel


def is_distributed() -> bool:
    """Whether this process is one of several of an initialised default process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DistributedKernel:
    """:class:`SGDMLKernel` whose products are split by training frames over the ranks of ``group``
    (the default group when None); a ``KernelOperator`` on every rank (see module docstring).

    Args:
        kernel: the whole kernel (every rank builds the same one; its geometry is σ-independent and
            cheap next to the products).
        group: the process group; every rank of it must call every method in the same order.
    """

    def __init__(self, kernel: SGDMLKernel, group: dist.ProcessGroup | None = None) -> None:
        self.kernel = kernel
        self.group = group
        self.rank = dist.get_rank(group)
        world = dist.get_world_size(group)
        bounds = [kernel.n_frames * r // world for r in range(world + 1)]
        self.counts = [bounds[r + 1] - bounds[r] for r in range(world)]  # frames per rank
        self.rows = slice(bounds[self.rank], bounds[self.rank + 1])
        self.n, self.dtype, self.device = kernel.n, kernel.dtype, kernel.device

    def matvec(self, v: Tensor) -> Tensor:
        """``K v`` [n] for ``v`` [n] (or [n, k]: ``K V``), the same on every rank."""
        product = self._gather(self.kernel.matmat(v.reshape(self.n, -1), rows=self.rows))
        return product if v.ndim == 2 else product[:, 0]

    def columns(self, idx: Tensor) -> Tensor:
        """``K[:, idx]`` [n, k], the same on every rank."""
        return self._gather(self.kernel.columns(idx, rows=self.rows).contiguous())

    def diagonal(self) -> Tensor:
        """``diag(K)`` [n], computed whole on every rank."""
        return self.kernel.diagonal()

    def _gather(self, local: Tensor) -> Tensor:
        """The row blocks [3N frames_r, k] of every rank r, stacked in rank order: [n, k]. Blocks are
        padded to the largest (``all_gather`` wants equal sizes) and trimmed after."""
        d = 3 * self.kernel.n_atoms
        padded = local.new_zeros(max(self.counts) * d, *local.shape[1:])
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in self.counts]
        dist.all_gather(parts, padded, group=self.group)
        return torch.cat([part[: count * d] for part, count in zip(parts, self.counts)])

    def __repr__(self) -> str:
        return f"DistributedKernel({self.kernel!r}, rank {self.rank} of {len(self.counts)}, frames {self.rows})"
