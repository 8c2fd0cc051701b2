"""The iterate of conjugate gradients (:class:`CGState`) and its checkpoint on disk, from which an
interrupted :func:`~geopatra.solvers.pcg.pcg` resumes."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from geopatra.errors import SolverError

logger = logging.getLogger(__name__)

_CHECKPOINT_FORMAT = "geopatra-pcg"
_CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` atomically: ``torch.save`` to a temporary file, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | os.PathLike, b: Tensor) -> dict | None:
    """The PCG state stored at ``path`` if it belongs to right-hand side ``b``, else ``None``.

    A missing file gives ``None`` silently; an unreadable file, a foreign file, or one written for
    another ``b`` or another ``n`` gives ``None`` with a warning (the solve then starts afresh).
    Keys: ``x, r, p`` [n] (CPU), ``rz`` (float), ``iteration`` (int), ``tag`` (method string).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        warnings.warn(f"PCG checkpoint {path} is unreadable ({exc}); ignoring it", stacklevel=3)
        return None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        warnings.warn(f"{path} is not a geopatra PCG checkpoint; ignoring it", stacklevel=3)
        return None
    n = b.numel()
    if state.get("n") != n:
        warnings.warn(
            f"PCG checkpoint {path} is for n={state.get('n')}, this system has n={n}; ignoring it",
            stacklevel=3,
        )
        return None
    stored_b = state["b"]
    if stored_b.dtype != b.dtype or not torch.equal(stored_b, b.detach().cpu()):
        warnings.warn(
            f"PCG checkpoint {path} was written for another right-hand side b; ignoring it",
            stacklevel=3,
        )
        return None
    return state


@dataclass
class CGState:
    """The iterate of preconditioned CG for ``A x = b``: solution ``x`` [n], residual ``r = b - A x``
    [n] (updated recursively), search direction ``p`` [n], ``rz = rᵀ P⁻¹ r`` and the iteration count."""

    x: Tensor
    r: Tensor
    p: Tensor
    rz: float
    iteration: int

    @classmethod
    def from_residual(cls, x: Tensor, r: Tensor, precond: Callable[[Tensor], Tensor], iteration: int) -> CGState:
        """Fresh search directions at ``x`` with residual ``r`` (a start, or a restart)."""
        z = precond(r)
        return cls(x, r, z.clone(), float(torch.dot(r, z)), iteration)

    def residual(self, b_norm: float) -> float:
        """The recursive relative residual ``||r|| / ||b||``."""
        return float(torch.linalg.vector_norm(self.r)) / b_norm

    def step(self, matvec: Callable[[Tensor], Tensor], precond: Callable[[Tensor], Tensor], method: str,
             residual: float) -> None:
        """One CG iteration, in place. Raises :class:`SolverError` when ``A`` or ``P`` is found not
        positive definite or a value is not finite (``method``, ``residual``: for the message)."""
        Ap = matvec(self.p)
        pAp = float(torch.dot(self.p, Ap))
        if not (pAp > 0 and math.isfinite(pAp)):
            raise SolverError(
                f"{method}: pᵀAp = {pAp:.3g} at iteration {self.iteration}: the operator is not positive "
                f"definite or produced non-finite values (residual {residual:.3g})"
            )
        alpha = self.rz / pAp
        self.x.add_(self.p, alpha=alpha)
        self.r.add_(Ap, alpha=-alpha)
        z = precond(self.r)
        rz_new = float(torch.dot(self.r, z))
        if not (rz_new >= 0 and math.isfinite(rz_new)):
            raise SolverError(
                f"{method}: rᵀP⁻¹r = {rz_new:.3g} at iteration {self.iteration}: the preconditioner is "
                f"not positive definite or produced non-finite values (residual {residual:.3g})"
            )
        self.p = z + (rz_new / self.rz) * self.p  # out of place: P⁻¹ may return (a view of) r
        self.rz = rz_new
        self.iteration += 1

    def to_checkpoint(self, b: Tensor, method: str) -> dict:
        """The dictionary :func:`read_checkpoint` reads back (tensors on the CPU)."""
        return {"format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION, "n": b.numel(),
                "b": b.detach().cpu(), "x": self.x.cpu(), "r": self.r.cpu(), "p": self.p.cpu(),
                "rz": self.rz, "iteration": self.iteration, "tag": method}


def initial_state(matvec: Callable[[Tensor], Tensor], precond: Callable[[Tensor], Tensor], b: Tensor,
                   x0: Tensor | None, ckpt: Path | None, method: str, start_iteration: int) -> CGState:
    """Where CG starts: a checkpoint of the same ``method`` whole; one of another method (e.g. another
    preconditioner) for its ``x`` and iteration count only; else ``x0`` (default zeros)."""
    stored = read_checkpoint(ckpt, b) if ckpt is not None else None
    as_b = {"device": b.device, "dtype": b.dtype}
    if stored is not None and stored.get("tag") == method:
        logger.info("%s: resuming from checkpoint %s at iteration %d", method, ckpt, int(stored["iteration"]))
        x, r, p = (stored[key].to(**as_b) for key in ("x", "r", "p"))
        return CGState(x, r, p, float(stored["rz"]), int(stored["iteration"]))
    if stored is not None:
        x, iteration = stored["x"].to(**as_b), int(stored["iteration"])
        logger.info("%s: warm start from checkpoint %s (written by %s) at iteration %d",
                    method, ckpt, stored.get("tag"), iteration)
    else:
        iteration = int(start_iteration)
        if x0 is not None and x0.shape != b.shape:
            raise ValueError(f"pcg: x0 has shape {tuple(x0.shape)}; expected {tuple(b.shape)}")
        x = torch.zeros_like(b) if x0 is None else x0.detach().to(**as_b).clone()
    r = b - matvec(x) if bool(x.any()) else b.clone()
    return CGState.from_residual(x, r, precond, iteration)
