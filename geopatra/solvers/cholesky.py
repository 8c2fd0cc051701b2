"""Exact solve of ``(K + λI) x = b`` by a Cholesky factorisation of the assembled kernel.

The kernel is assembled on the operator's device into one [n, n] float64 matrix that is then
factored in place: by the operator's ``fill_dense`` where it has one (the sGDML kernel; only the
lower triangle on CPU), else column block by column block from any ``KernelOperator``'s
``columns``. The memory this needs (``n² · 8`` bytes plus one column block) is logged before anything is
allocated, and the solve is refused with :class:`SolverError` when it exceeds ``memory_budget_gb``:
use the iterative solver (``solver: iterative``, :func:`geopatra.solvers.pcg.solve_iterative`)
instead. If the factorisation fails, jitter is added to the diagonal by decades (with a warning).
"""

from __future__ import annotations

import logging
import time
import warnings

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geopatra.errors import SolverError
from geopatra.solvers.operator import KernelOperator
from geopatra.solvers.result import SolveResult

logger = logging.getLogger(__name__)

#: Relative jitter (times the mean diagonal of K + λI) tried by decades after a failed factorisation.
_JITTER = [1e-13, 1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6]


def exact_memory_bytes(n: int, block_columns: int = 512) -> int:
    """Bytes the exact solver needs for ``n`` unknowns: K (factored in place) plus one column block."""
    return 8 * n * n + 8 * n * min(block_columns, n) * 2


def solve_cholesky(
    operator: KernelOperator,
    b: Tensor,
    lam: float,
    *,
    memory_budget_gb: float = 8.0,
    block_columns: int = 512,
    progress: bool = True,
) -> SolveResult:
    """Solve ``(K + λI) x = b`` exactly.

    Args:
        operator: the kernel ``K`` [n, n] without ``λI`` (see ``geopatra.solvers.operator``).
        b: right-hand side [n].
        lam: ridge ``λ`` ≥ 0.
        memory_budget_gb: refuse (``SolverError``) if the dense kernel would need more [GiB].
        block_columns: columns assembled per ``operator.columns`` call.
        progress: show tqdm bars during assembly and over the Cholesky panels (the one-thread
            CPU path is a single LAPACK call: it logs its start instead).

    Returns:
        ``SolveResult`` with ``iterations = 0``, the relative residual ``||b - (K+λI)x|| / ||b||``
        (from one ``operator.matvec``) and ``method = "cholesky"`` (``"cholesky+jitter"`` if
        jitter had to be added; the jitter is then part of the solved system).

    Raises:
        SolverError: over the memory budget, or not factorable with the largest jitter.
    """
    if lam < 0:
        raise ValueError(f"solve_cholesky: lam must be >= 0; got {lam}")
    n = int(operator.n)
    if b.shape != (n,):
        raise ValueError(f"solve_cholesky: b must have shape ({n},); got {tuple(b.shape)}")
    need = exact_memory_bytes(n, block_columns)
    logger.info(
        "exact solver: n = %d unknowns, dense kernel needs %.2f GiB (budget %.2f GiB) on %s",
        n, need / 2**30, memory_budget_gb, operator.device,
    )
    if need > memory_budget_gb * 2**30:
        raise SolverError(
            f"exact solver: the dense kernel for n = {n} unknowns needs {need / 2**30:.2f} GiB, "
            f"more than memory_budget_gb = {memory_budget_gb:g}; use the iterative solver "
            f"(solver: iterative, PCG with a Nyström preconditioner) or raise memory_budget_gb"
        )
    start = time.perf_counter()
    b = b.to(operator.device, operator.dtype)
    K = torch.empty(n, n, dtype=operator.dtype, device=operator.device)
    method, jitter = "cholesky", 0.0
    for attempt in range(len(_JITTER) + 1):
        _assemble(operator, K, block_columns, progress)
        K.diagonal().add_(lam + jitter)
        if _factor_in_place(K, progress=progress):
            break
        if attempt == len(_JITTER):
            raise SolverError(
                f"exact solver: Cholesky of K + λI (n = {n}) failed even with jitter "
                f"{jitter:.3g} ({_JITTER[-1]:g} x mean diagonal); the kernel is numerically "
                f"singular: increase lam or sigma, or remove duplicate training geometries"
            )
        scale = float(operator.diagonal().mean().abs()) + lam or 1.0
        jitter = _JITTER[attempt] * scale
        method = "cholesky+jitter"
        warnings.warn(
            f"exact solver: Cholesky failed; retrying with jitter {jitter:.3g} added to the "
            f"diagonal of K + λI (λ = {lam:g})",
            RuntimeWarning,
            stacklevel=2,
        )
    x = _solve_factored(K, b)
    del K
    residual_vec = b - (operator.matvec(x) + (lam + jitter) * x)
    residual = float(torch.linalg.vector_norm(residual_vec) / torch.linalg.vector_norm(b).clamp_min(1e-300))
    seconds = time.perf_counter() - start
    logger.info("exact solver: %s in %.2f s, relative residual %.2e", method, seconds, residual)
    return SolveResult(x=x, iterations=0, residual=residual, converged=True, seconds=seconds, method=method)


def _assemble(operator: KernelOperator, K: Tensor, block_columns: int, progress: bool) -> None:
    """Fill ``K`` [n, n] from the operator.

    Operators with a ``fill_dense(K, lower_only=..., progress=...)`` method (the sGDML kernel's
    atom-space block formula) write it directly; on CPU only the row-major lower triangle, which
    is all :func:`_factor_in_place` and :func:`_solve_factored` read. Otherwise the operator's
    columns are copied in, ``block_columns`` at a time.
    """
    fill = getattr(operator, "fill_dense", None)
    if callable(fill):
        fill(K, lower_only=K.device.type == "cpu", progress=progress)
        return
    n, step = K.shape[0], max(1, int(block_columns))
    for s in tqdm(range(0, n, step), desc="kernel assembly", disable=not progress, leave=False):
        idx = torch.arange(s, min(n, s + step), device=K.device)
        K[:, s : s + idx.numel()] = operator.columns(idx)


#: Columns per panel of the blocked factorisation: large enough that the trailing-update GEMMs run
#: near peak (on 2 CPU cores: 62 GFLOP/s at n = 8,000 with 512 vs 47 with 2,048, where the
#: panel's triangular solve starts to dominate), small enough that a panel copy is cheap.
_PANEL = 512


def _factor_in_place(K: Tensor, panel: int = _PANEL, progress: bool = False) -> bool:
    """Overwrite the symmetric ``K`` with its lower Cholesky factor, in place; False on failure.

    Left-looking blocked Cholesky: for each column panel ``j:e``, subtract ``L[j:, :j] L[j:e, :j]ᵀ``
    (one GEMM on all threads, written into ``K``'s own memory), factor the ``panel²`` diagonal
    block, and solve the panel below it against that block. Only the lower triangle of ``K`` is
    read or written, so the upper one may hold anything (on CPU it is never assembled), and
    nothing of size ``n²`` is ever copied. (LAPACK ``dpotrf`` is as frugal but, through scipy's
    OpenBLAS, segfaults here with 2 threads at n = 25,200, as the reference sgdml's does; torch's
    ``cholesky_ex`` holds a second n² copy.) Same flops, ``n³/3``, on CPU and GPU. With one torch
    thread on CPU, LAPACK ``dpotrf`` in place instead (:func:`_lapack_factor_in_place`).
    """
    n = K.shape[0]
    if K.device.type == "cpu" and torch.get_num_threads() == 1:
        logger.info("exact solver: LAPACK dpotrf on n = %d (one call, no progress bar)", n)
        return _lapack_factor_in_place(K)
    for j in tqdm(range(0, n, panel), desc="Cholesky panels", disable=not progress, leave=False):
        e = min(j + panel, n)
        if j > 0:
            K[j:, j:e].addmm_(K[j:, :j], K[j:e, :j].T, alpha=-1.0)
        diag = K[j:e, j:e]
        L, info = torch.linalg.cholesky_ex(torch.tril(diag) + torch.tril(diag, -1).T)
        if int(info) != 0:
            return False
        diag.copy_(L)
        if e < n:
            K[e:, j:e] = torch.linalg.solve_triangular(L.T, K[e:, j:e], upper=True, left=False)
    return True


def _lapack_factor_in_place(K: Tensor) -> bool:
    """Single-threaded LAPACK ``dpotrf`` on ``K``'s own memory (the row-major lower factor is the
    column-major upper one): on one thread it beats the blocked loop (43 vs 28 GFLOP/s at n = 6,000
    here), and one OpenBLAS thread is the configuration that does not segfault."""
    from scipy.linalg import lapack
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        _, info = lapack.dpotrf(K.numpy().T, lower=0, overwrite_a=1, clean=0)
    return int(info) == 0


def _solve_factored(K: Tensor, b: Tensor) -> Tensor:
    """Solve with the factor left in ``K`` by :func:`_factor_in_place` (upper triangle ignored)."""
    if K.device.type == "cpu":
        from scipy.linalg import lapack

        x, info = lapack.dpotrs(K.numpy().T, b.numpy(), lower=0)
        if int(info) != 0:
            raise SolverError(f"exact solver: dpotrs failed with info = {int(info)}")
        return torch.from_numpy(x)
    # triangular solves reference only the lower triangle: no n² copy of K (torch.tril would make one)
    y = torch.linalg.solve_triangular(K, b[:, None], upper=False)
    return torch.linalg.solve_triangular(K.T, y, upper=True)[:, 0]
