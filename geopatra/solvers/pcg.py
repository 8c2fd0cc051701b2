"""Matrix-free preconditioned conjugate gradients for ``(K + λI) x = b``, with checkpoint/resume.

:func:`pcg` solves ``A x = b`` for any symmetric positive definite ``A`` given as a ``matvec``
callable; :func:`solve_iterative` applies it to a :class:`~geopatra.solvers.operator.KernelOperator`
plus ridge ``λ``, with a Nyström preconditioner whose rank ``k`` doubles when CG stagnates
(the strategy of Blücher, Müller & Chmiela, JCTC 2023, for exact sGDML training at MD22 scale).

Both work in the dtype and on the device of ``b`` (float64 on CPU or GPU).
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geopatra.errors import SolverError
from geopatra.solvers.cg_state import CGState, initial_state, read_checkpoint, save_checkpoint
from geopatra.solvers.nystrom import NystromPreconditioner, Selection, check_selection
from geopatra.solvers.operator import KernelOperator
from geopatra.solvers.result import SolveResult

logger = logging.getLogger(__name__)

def default_max_iter(n: int) -> int:
    """Default iteration budget for a system of size ``n``: ``min(10 n, 100000)``."""
    return max(1, min(10 * n, 100_000))


def pcg(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    *,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    x0: Tensor | None = None,
    tol: float = 1e-8,
    max_iter: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    method: str | None = None,
    start_iteration: int = 0,
    stagnation_window: int = 0,
    stagnation_factor: float = 10.0,
) -> SolveResult:
    """Solve ``A x = b`` for symmetric positive definite ``A`` by (preconditioned) CG.

    Args:
        matvec: ``v [n] -> A v [n]``.
        b: right-hand side [n].
        preconditioner: ``r [n] -> P⁻¹ r [n]`` with ``P ≈ A`` SPD; ``None`` for plain CG.
        x0: initial guess [n] (default zeros); ignored when a checkpoint is resumed.
        tol: stop when the relative residual ``||b - A x|| / ||b||`` ≤ ``tol``. Convergence of
            the recursively updated residual is confirmed with an explicit ``b - A x``. If that
            misses, CG restarts from the true residual; after three such misses in a row without
            the true residual halving, the solve stops unconverged (rounding errors bound the
            attainable residual, roughly ``eps·cond(A)``).
        max_iter: budget on the *total* iteration count, which includes iterations restored from
            a checkpoint or given by ``start_iteration`` (default :func:`default_max_iter`).
        checkpoint_path: if given, the state ``(x, r, p, rz, iteration)`` is saved there
            atomically every ``checkpoint_every`` iterations and at the end; a later call with the
            same path and the same ``b`` resumes from it. If the stored ``method`` differs (e.g.
            another preconditioner), only ``x`` and the iteration count are reused.
        checkpoint_every: iterations between checkpoints.
        progress: show a tqdm bar with the residual.
        method: label stored in the result and checkpoint (default ``"pcg"`` or ``"cg"``).
        start_iteration: iteration count to start from when no checkpoint is resumed.
        stagnation_window: if > 0, stop early (``converged=False``) when the best residual has
            decreased by less than ``stagnation_factor`` over the last ``stagnation_window``
            iterations of this call.
        stagnation_factor: see ``stagnation_window``.

    Returns:
        :class:`SolveResult`; ``residual`` is the explicitly computed final relative residual.

    Raises:
        ValueError: bad shapes or arguments.
        SolverError: ``A`` or ``P`` found not positive definite, or non-finite values.
    """
    t0 = time.perf_counter()
    if b.ndim != 1:
        raise ValueError(f"pcg: b must be a vector [n]; got shape {tuple(b.shape)}")
    if not tol > 0:
        raise ValueError(f"pcg: tol must be > 0; got {tol}")
    if checkpoint_every < 1:
        raise ValueError(f"pcg: checkpoint_every must be >= 1; got {checkpoint_every}")
    max_iter = default_max_iter(b.numel()) if max_iter is None else int(max_iter)
    method = method or ("pcg" if preconditioner is not None else "cg")
    precond = preconditioner if preconditioner is not None else (lambda v: v)
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None

    b_norm = float(torch.linalg.vector_norm(b))
    if b_norm == 0.0:
        return SolveResult(torch.zeros_like(b), start_iteration, 0.0, True,
                           time.perf_counter() - t0, method, stop_reason="converged")
    state = initial_state(matvec, precond, b, x0, ckpt, method, start_iteration)

    def save() -> None:
        if ckpt is not None:
            save_checkpoint(ckpt, state.to_checkpoint(b, method))

    res = state.residual(b_norm)
    true_res: float | None = None  # explicit residual of the current x, if computed
    last_true: float | None = None  # explicit residual at the previous failed convergence check
    stalls = 0  # failed convergence checks in a row that did not halve the true residual
    best = res
    history: deque[float] = deque([best], maxlen=max(stagnation_window, 0) + 1)
    converged, reason = False, "max_iter"
    bar = tqdm(total=max_iter, initial=min(state.iteration, max_iter), desc=method, unit="it",
               disable=not progress, leave=False)
    try:
        while True:
            if res <= tol:
                r_true = b - matvec(state.x)
                true_res = float(torch.linalg.vector_norm(r_true)) / b_norm
                if true_res <= tol:
                    converged, reason = True, "converged"
                    break
                stalls = stalls + 1 if last_true is not None and true_res > 0.5 * last_true else 0
                if stalls >= 3:
                    reason = "floor"  # rounding errors limit the attainable residual
                    break
                last_true = true_res
                logger.debug("%s: recursive residual %.2e but true residual %.2e; restarting",
                             method, res, true_res)
                state = CGState.from_residual(state.x, r_true, precond, state.iteration)
                res = true_res
            if state.iteration >= max_iter:
                break
            if stagnation_window > 0 and len(history) == history.maxlen \
                    and history[0] < stagnation_factor * history[-1]:
                reason = "stagnated"
                break
            state.step(matvec, precond, method, res)
            true_res = None
            res = state.residual(b_norm)
            best = min(best, res)
            history.append(best)
            bar.update(1)
            bar.set_postfix_str(f"residual={res:.2e}", refresh=False)
            if state.iteration % checkpoint_every == 0:
                save()
    finally:
        bar.close()
    if true_res is None:
        true_res = float(torch.linalg.vector_norm(b - matvec(state.x))) / b_norm
        converged = true_res <= tol
    save()
    seconds = time.perf_counter() - t0
    if reason == "floor":
        logger.warning("%s: the true relative residual stalls at %.2e > tol %.1e (limit of "
                       "floating-point accuracy for this system); stopping", method, true_res, tol)
    logger.info("%s: %d iterations, relative residual %.2e, converged=%s (%s), %.2f s", method,
                state.iteration, true_res, converged, reason, seconds)
    return SolveResult(state.x, state.iteration, true_res, converged, seconds, method, stop_reason=reason)


def solve_iterative(
    operator: KernelOperator,
    b: Tensor,
    lam: float,
    *,
    tol: float = 1e-8,
    max_iter: int | None = None,
    preconditioner: Literal["nystrom", "none"] = "nystrom",
    k: int = 200,
    selection: Selection = "leverage",
    adaptive: bool = True,
    k_max: int | None = None,
    seed: int = 0,
    group_size: int = 1,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 50,
    progress: bool = True,
    raise_on_failure: bool = False,
    stagnation_window: int = 100,
    stagnation_factor: float = 2.0,
) -> SolveResult:
    """Solve ``(K + λI) x = b`` matrix-free by PCG with an (adaptive) Nyström preconditioner.

    Args:
        operator: the kernel ``K`` (without ``λI``), see :class:`KernelOperator`.
        b: right-hand side [n], same dtype/device as the operator.
        lam: ridge ``λ`` > 0.
        tol: relative residual tolerance.
        max_iter: total CG iteration budget over all restarts (default :func:`default_max_iter`).
        preconditioner: ``"nystrom"`` or ``"none"`` (plain CG).
        k: initial number of inducing columns (clipped to ``n``).
        selection: inducing-column selection (``"random"``, ``"leverage"``, ``"pivoted_cholesky"``).
        adaptive: if CG stagnates (best residual down by less than ``stagnation_factor`` over
            ``stagnation_window`` iterations), double ``k`` (up to ``k_max``), rebuild the
            preconditioner and restart CG from the current iterate.
        k_max: largest ``k`` (default ``min(n, 8 k)``). The preconditioner holds ``k·n`` floats.
        seed: seed of the random column selections.
        group_size: select inducing columns in groups of this many consecutive columns
            (``ceil(k/g)`` groups); for sGDML pass ``3 * n_atoms``: the kernel computes the 3N
            columns of one training geometry at the cost of one.
        checkpoint_path: PCG state file for resuming an interrupted solve (see :func:`pcg`); the
            ``k`` reached is recovered from it.
        checkpoint_every: iterations between checkpoints.
        progress: show a progress bar.
        raise_on_failure: raise :class:`SolverError` instead of warning when not converged.
        stagnation_window, stagnation_factor: the stagnation test of ``adaptive``.

    Returns:
        :class:`SolveResult` with the total iteration count and wall time (preconditioner
        construction included) and ``method`` e.g. ``"pcg[nystrom-leverage,k=400]"``.

    Raises:
        ValueError: bad arguments. SolverError: numerical failure, or no convergence when
        ``raise_on_failure`` (with attributes ``iterations`` and ``residual``).
    """
    t0 = time.perf_counter()
    if preconditioner not in ("nystrom", "none"):
        raise ValueError(f"unknown preconditioner {preconditioner!r}; expected 'nystrom' or 'none'")
    check_selection(selection)
    if not lam > 0:
        raise ValueError(f"solve_iterative: lam must be > 0; got {lam}")
    n = operator.n
    if b.shape != (n,):
        raise ValueError(f"solve_iterative: b has shape {tuple(b.shape)}; expected ({n},)")
    if k < 1:
        raise ValueError(f"solve_iterative: k must be >= 1; got {k}")
    max_iter = default_max_iter(n) if max_iter is None else int(max_iter)
    lam = float(lam)

    def matvec(v: Tensor) -> Tensor:
        return operator.matvec(v) + lam * v

    common = {"tol": tol, "max_iter": max_iter, "checkpoint_path": checkpoint_path,
              "checkpoint_every": checkpoint_every, "progress": progress}
    if preconditioner == "none":
        result = pcg(matvec, b, method="cg", **common)
    else:
        k = min(int(k), n)
        k_max = min(n, 8 * k if k_max is None else int(k_max))
        k_max = max(k_max, k)
        if checkpoint_path is not None:  # resume with the k reached before the interruption
            state = read_checkpoint(checkpoint_path, b)
            tag = str((state or {}).get("tag"))
            found = re.fullmatch(rf"pcg\[nystrom-{selection},k=(\d+)\]", tag)
            if found:
                k = max(k, min(int(found.group(1)), k_max))
        x: Tensor | None = None
        iterations = 0
        while True:
            P = NystromPreconditioner.build(operator, lam, k, selection, seed=seed,
                                            group_size=group_size, progress=progress)
            can_grow = adaptive and k < k_max
            result = pcg(matvec, b, preconditioner=P, x0=x, method=f"pcg[{P.name}]",
                         start_iteration=iterations,
                         stagnation_window=stagnation_window if can_grow else 0,
                         stagnation_factor=stagnation_factor, **common)
            x, iterations = result.x, result.iterations
            if result.stop_reason != "stagnated" or not can_grow:
                break
            new_k = min(2 * k, k_max)
            logger.info("CG stagnated at iteration %d (residual %.2e) with k=%d; growing k to %d",
                        iterations, result.residual, k, new_k)
            k = new_k
    result.seconds = time.perf_counter() - t0
    logger.info("solve_iterative: %s, %d iterations, residual %.2e, converged=%s, %.2f s",
                result.method, result.iterations, result.residual, result.converged, result.seconds)
    if not result.converged:
        msg = (f"{result.method} did not converge: relative residual {result.residual:.3g} > "
               f"tol {tol:.1g} after {result.iterations} iterations")
        if raise_on_failure:
            raise SolverError(msg, iterations=result.iterations, residual=result.residual)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return result
