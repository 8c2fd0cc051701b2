"""The outcome of a linear solve, shared by the direct (Cholesky) and iterative (PCG) solvers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class SolveResult:
    """Solution of ``(K + λI) x = b`` and how it was obtained.

    Attributes:
        x: solution [n].
        iterations: solver iterations (0 for direct solves; for resumed iterative solves the
            total including the iterations done before the interruption).
        residual: final relative residual ``||b - (K + λI) x|| / ||b||``.
        converged: whether ``residual`` reached the requested tolerance.
        seconds: wall time of the solve [s] (including preconditioner construction).
        method: e.g. ``"cholesky"``, ``"pcg[nystrom-leverage,k=200]"``, ``"cg"``.
        stop_reason: why an iterative solve stopped: ``"converged"``, ``"max_iter"``,
            ``"stagnated"`` or ``"floor"`` (true residual stalled by rounding); ``""`` otherwise.
    """

    x: Tensor
    iterations: int
    residual: float
    converged: bool
    seconds: float
    method: str = ""
    stop_reason: str = ""
