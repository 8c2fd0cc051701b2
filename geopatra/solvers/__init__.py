"""Linear solvers for kernel models: exact (Cholesky) and matrix-free Nyström-preconditioned CG."""

from geopatra.solvers.nystrom import NystromPreconditioner
from geopatra.solvers.operator import DenseOperator, KernelOperator
from geopatra.solvers.pcg import pcg, solve_iterative
from geopatra.solvers.result import SolveResult

__all__ = [
    "DenseOperator",
    "KernelOperator",
    "NystromPreconditioner",
    "SolveResult",
    "pcg",
    "solve_iterative",
]
