"""How sGDML solves ``(K + λI) α = F``: the solver settings as one object.

:class:`SolveSettings` picks the exact (Cholesky) or the iterative (Nyström-preconditioned CG) solver
for a system size, sizes the preconditioner within the memory budget, names the PCG checkpoint of
each solve and runs it. In one of several processes of a ``torch.distributed`` group the iterative
solve shares its products across them (:class:`DistributedKernel`); an exact solve does not
distribute and runs whole in every process.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch.distributed as dist
from torch import Tensor

from geopatra.models.sgdml.distributed import DistributedKernel, is_distributed
from geopatra.models.sgdml.kernel import SGDMLKernel
from geopatra.solvers.cholesky import exact_memory_bytes, solve_cholesky
from geopatra.solvers.nystrom import check_selection
from geopatra.solvers.pcg import solve_iterative
from geopatra.solvers.result import SolveResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolveSettings:
    """The solver settings of :class:`~geopatra.models.sgdml.SGDML` (its ``solver``,
    ``memory_budget_gb`` and ``solver_*`` arguments).

    Attributes:
        solver: ``"exact"``, ``"iterative"`` or ``"auto"`` (exact while the dense kernel fits
            ``memory_budget_gb``).
        memory_budget_gb: memory the exact solve and the Nyström factor may use [GiB].
        tol: relative residual at which CG stops.
        k: initial Nyström rank (default n / 4), in whole training geometries.
        selection: how the Nyström columns are chosen.
        max_iter: CG iterations per solve (default ``min(10 n, 100000)``).
        checkpoint: PCG state file to resume an interrupted solve from (one per σ and M).
    """

    solver: Literal["auto", "exact", "iterative"] = "auto"
    memory_budget_gb: float = 8.0
    tol: float = 1e-8
    k: int | None = None
    selection: Literal["pivoted_cholesky", "leverage", "random"] = "pivoted_cholesky"
    max_iter: int | None = None
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.solver not in ("auto", "exact", "iterative"):
            raise ValueError(f"SGDML: solver must be 'auto', 'exact' or 'iterative'; got {self.solver!r}")
        check_selection(self.selection)
        if self.k is not None and self.k < 1:
            raise ValueError(f"SGDML: solver_k must be >= 1 or None; got {self.k}")
        if self.max_iter is not None and self.max_iter < 1:
            raise ValueError(f"SGDML: solver_max_iter must be >= 1 or None; got {self.max_iter}")

    def choose(self, n: int) -> Literal["exact", "iterative"]:
        """The solver used for ``n`` unknowns: ``solver`` unless it is ``"auto"``, in which case
        ``"exact"`` if the dense kernel fits ``memory_budget_gb``, else ``"iterative"``."""
        if self.solver != "auto":
            return self.solver
        return "exact" if exact_memory_bytes(n) <= self.memory_budget_gb * 2**30 else "iterative"

    def preconditioner_rank(self, n: int, group: int) -> tuple[int, int]:
        """``(k, k_max)``: initial and largest Nyström rank for ``n`` unknowns in groups of
        ``group`` columns (one training geometry), whole groups, within ``memory_budget_gb``."""
        cap = int(self.memory_budget_gb * 2**30 // (3 * 8 * n))  # G, Bᵀ and a copy: ~3·k·n floats
        cap = max(group, cap // group * group)
        k = self.k if self.k is not None else n // 4
        k = min(max(group, math.ceil(k / group) * group), cap, n)
        return k, max(k, min(cap, n))

    def checkpoint_for(self, op: SGDMLKernel) -> Path | None:
        """The PCG state file of one solve: one per σ and training-set size (σ search vs final)."""
        if self.checkpoint is None:
            return None
        path = Path(self.checkpoint)
        return path.with_name(f"{path.stem}.sigma{op.sigma:g}.m{op.n_frames}{path.suffix or '.pt'}")

    def solve(self, op: SGDMLKernel, b: Tensor, lam: float) -> SolveResult:
        """Solve ``(K + λI) α = b`` for the kernel ``op`` and right-hand side ``b`` [n]."""
        if self.choose(op.n) == "exact":
            if is_distributed():
                logger.info("SGDML: the exact solve does not distribute: each of %d processes solves it whole",
                            dist.get_world_size())
            return solve_cholesky(op, b, lam, memory_budget_gb=self.memory_budget_gb)
        group = 3 * op.n_atoms
        k, k_max = self.preconditioner_rank(op.n, group)
        operator = DistributedKernel(op) if is_distributed() else op
        logger.info("SGDML: iterative solve, n = %d, Nyström %s k = %d (k_max = %d)%s", op.n,
                    self.selection, k, k_max, f", {operator!r}" if operator is not op else "")
        return solve_iterative(
            operator, b, lam, tol=self.tol, max_iter=self.max_iter, k=k, k_max=k_max, selection=self.selection,
            group_size=group, checkpoint_path=self.checkpoint_for(op),
        )
