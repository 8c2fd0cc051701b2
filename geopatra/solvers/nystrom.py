"""Nyström preconditioner for ``K + λI`` from ``k`` inducing columns of a kernel operator.

With inducing set ``S`` (|S| = k), ``C = K[:, S]`` [n, k] and ``W = K[S, S]`` [k, k], the Nyström
approximation is ``K̃ = C W⁺ Cᵀ`` and the preconditioner is ``P = K̃ + λI``. It is applied through
the Woodbury identity in a form that never inverts ``W`` explicitly:

    W + s I = L Lᵀ                 (Cholesky; a tiny shift s only if W is numerically singular)
    B = L⁻¹ Cᵀ                     [k, n]   so that K̃ = Bᵀ B
    λI + B Bᵀ = L₂ L₂ᵀ             (Cholesky of a k x k matrix whose eigenvalues are ≥ λ)
    G = L₂⁻¹ B                     [k, n]
    P⁻¹ v = (v - Gᵀ (G v)) / λ

``λI + B Bᵀ = L⁻¹ (λW + CᵀC) L⁻ᵀ`` is congruent to the usual Woodbury inner matrix but has all
eigenvalues ≥ λ, and ``GᵀG = K̃ (K̃ + λI)⁻¹`` has eigenvalues in [0, 1). Storage is ``G`` only
(k·n floats); applying ``P⁻¹`` costs O(k·n).

Inducing columns are chosen by ``method``:

- ``"random"``: uniform without replacement (baseline).
- ``"leverage"``: approximate ridge leverage scores (Musco & Musco 2017): a uniform pilot set
  ``S₀`` of k/4 columns gives ``τᵢ = (Kᵢᵢ - K[i,S₀](K[S₀,S₀] + λI)⁻¹K[S₀,i]) / λ ≥ ℓᵢ(λ)``; the
  remaining columns are drawn without replacement with probability ∝ τ; the pilot is kept.
- ``"pivoted_cholesky"``: greedy pivoted incomplete Cholesky on the residual diagonal; its factor
  ``F`` [n, k] (``K̃ = F Fᵀ``) is used directly as ``Bᵀ``.

All selections are deterministic for a given ``seed``. With ``group_size`` g > 1 they pick whole
groups of g consecutive columns (scores summed per group; block pivoting), for operators whose
columns come in blocks at the cost of one: the sGDML kernel computes the 3N columns of a training
geometry at once, so g = 3N divides the cost of building the preconditioner by up to 3N.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Literal, get_args

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geopatra.errors import SolverError
from geopatra.solvers.operator import KernelOperator

logger = logging.getLogger(__name__)

Selection = Literal["random", "leverage", "pivoted_cholesky"]
SELECTIONS: tuple[str, ...] = get_args(Selection)

#: Relative jitter range (times the mean diagonal) tried, by decades, to factor W.
_JITTER_FIRST = 1e-14
_JITTER_LAST = 1e-4


def check_selection(method: str) -> None:
    """Raise ``ValueError`` unless ``method`` is one of :data:`SELECTIONS`."""
    if method not in SELECTIONS:
        raise ValueError(f"unknown inducing-column selection {method!r}; expected one of {SELECTIONS}")


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def stable_cholesky(A: Tensor, what: str = "matrix") -> tuple[Tensor, float]:
    """Lower Cholesky factor of a symmetric PSD ``A`` [k, k], adding jitter only if needed.

    Tries no shift, then ``s = 1e-14 ... 1e-4`` times the mean diagonal by decades.

    Returns:
        ``(L, s)``: ``L`` [k, k] with ``L Lᵀ = A + s I``, and the absolute shift ``s`` used.

    Raises:
        SolverError: if ``A`` cannot be factored even with the largest shift.
    """
    scale = float(A.diagonal().mean().abs()) if A.numel() else 1.0
    scale = scale if scale > 0 else 1.0
    shifts = [0.0]
    rel = _JITTER_FIRST
    while rel <= _JITTER_LAST * 1.0001:
        shifts.append(rel * scale)
        rel *= 10.0
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    for s in shifts:
        L, info = torch.linalg.cholesky_ex(A + s * eye if s else A)
        if int(info) == 0 and bool(torch.isfinite(L).all()):
            if s > 0:
                logger.debug("Cholesky of %s needed a shift of %.3g", what, s)
            if s > 1e-8 * scale:
                warnings.warn(
                    f"Nyström: Cholesky of {what} needed a relative jitter of {s / scale:.1e}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return L, s
    raise SolverError(
        f"Nyström: Cholesky of the {what} [{A.shape[0]}x{A.shape[0]}] failed even with a jitter of "
        f"{_JITTER_LAST:.0e} x mean diagonal; the kernel is probably not PSD (check its hyperparameters)"
    )


def _solve_lower(L: Tensor, B: Tensor) -> Tensor:
    return torch.linalg.solve_triangular(L, B, upper=False)


def _check_groups(n: int, group_size: int) -> int:
    """Number of column groups; raises ``ValueError`` unless ``group_size`` divides ``n``."""
    if group_size < 1 or n % group_size:
        raise ValueError(f"group_size must be a positive divisor of n = {n}; got {group_size}")
    return n // group_size


def _expand(groups: Tensor, group_size: int) -> Tensor:
    """Column indices [len(groups) * g] of column groups ``groups`` [m]."""
    return (groups[:, None] * group_size + torch.arange(group_size)).reshape(-1)


def select_columns(
    operator: KernelOperator,
    k: int,
    method: Selection = "leverage",
    *,
    lam: float,
    seed: int = 0,
    group_size: int = 1,
) -> Tensor:
    """Indices of about ``k`` inducing columns of ``operator`` (sorted LongTensor [k']).

    With ``group_size`` g > 1, whole groups of g consecutive columns are selected (for sGDML the
    3N columns of one training geometry cost as much as one of them), ``ceil(k / g)`` groups.
    ``"pivoted_cholesky"`` may return fewer columns if the residual diagonal vanishes (numerical
    rank reached). See the module docstring for the methods.
    """
    check_selection(method)
    if method == "pivoted_cholesky":
        idx, _ = pivoted_cholesky(operator, k, group_size=group_size, progress=False)
        return torch.sort(idx).values
    _, idx = _sample_columns(operator, k, method, lam=lam, seed=seed, group_size=group_size, progress=False)
    return idx


def _columns(operator: KernelOperator, idx: Tensor, bar: tqdm, group_size: int = 1, chunks: int = 16) -> Tensor:
    """``operator.columns(idx)`` [n, len(idx)] fetched in about ``chunks`` parts of whole groups,
    advancing ``bar``; returned as the transposed view of a row-major [len(idx), n] array (what the
    triangular solves read), so no copy is made."""
    k = idx.numel()
    step = max(1, -(-k // chunks))
    step = -(-step // group_size) * group_size  # a part never splits a group (sGDML: a geometry)
    out = torch.empty(k, operator.n, dtype=operator.dtype, device=operator.device)
    for start in range(0, k, step):
        part = idx[start : start + step]
        out[start : start + part.numel()] = operator.columns(part.to(operator.device)).T
        bar.update(part.numel())
    return out.T


def _sample_columns(
    operator: KernelOperator, k: int, method: str, *, lam: float, seed: int, group_size: int = 1,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Columns ``C = K[:, S]`` [n, k'] and sorted ``S`` [k'] for random / leverage selection."""
    g = int(group_size)
    n_groups = _check_groups(operator.n, g)
    kg = min(n_groups, -(-int(k) // g))  # groups to take
    gen = _generator(seed, torch.device("cpu"))
    bar = tqdm(total=kg * g, desc=f"Nyström columns ({method})", unit="col", disable=not progress, leave=False)
    with bar:
        return _sample_columns_into(operator, method, lam, g, n_groups, kg, gen, bar)


def _sample_columns_into(
    operator: KernelOperator, method: str, lam: float, g: int, n_groups: int, kg: int,
    gen: torch.Generator, bar: tqdm,
) -> tuple[Tensor, Tensor]:
    if method == "random" or kg == n_groups:
        idx = _expand(torch.sort(torch.randperm(n_groups, generator=gen)[:kg]).values, g)
        return _columns(operator, idx, bar, g), idx
    # leverage: uniform pilot, then ridge-leverage-score sampling of the rest.
    k0 = max(1, kg // 4)
    pilot_groups = torch.sort(torch.randperm(n_groups, generator=gen)[:k0]).values
    pilot = _expand(pilot_groups, g)
    C0 = _columns(operator, pilot, bar, g)  # [n, k0 g]
    W0 = C0[pilot.to(C0.device)]
    eye = torch.eye(W0.shape[0], dtype=C0.dtype, device=C0.device)
    L0, _ = stable_cholesky(0.5 * (W0 + W0.T) + lam * eye, "pilot block K[S0,S0] + λI")
    V = _solve_lower(L0, C0.T)  # [k0 g, n]
    tau = (operator.diagonal().to(C0.device) - (V * V).sum(0)).clamp_min(0.0) / lam  # [n]
    del V
    score = tau.cpu().reshape(n_groups, g).sum(1)
    score[pilot_groups] = 0.0
    n_more = kg - k0
    positive = int((score > 0).sum())
    if n_more == 0:
        extra_groups = torch.zeros(0, dtype=torch.long)
    elif positive >= n_more:
        extra_groups = torch.multinomial(score, n_more, replacement=False, generator=gen)
    else:  # (numerically) exact rank reached: fill up uniformly from the rest
        mask = score == 0
        mask[pilot_groups] = False
        rest = torch.nonzero(mask).flatten()
        rest = rest[torch.randperm(rest.numel(), generator=gen)[: n_more - positive]]
        extra_groups = torch.cat([torch.nonzero(score > 0).flatten(), rest])
    extra = _expand(extra_groups, g)
    C1 = _columns(operator, extra, bar, g)
    idx = torch.cat([pilot, extra])
    C = torch.cat([C0, C1], dim=1)
    order = torch.argsort(idx)
    return C[:, order.to(C.device)], idx[order]


def _small_pivoted_cholesky(S: Tensor, floor: float, r_max: int) -> tuple[list[int], Tensor]:
    """Greedy diagonally pivoted Cholesky of a small symmetric PSD ``S`` [g, g]: at most ``r_max``
    pivots, stopping when the largest residual diagonal is ``<= floor``. Returns the pivots in
    order and ``L`` [g, r] with ``S[:, P] ≈ L L[P]ᵀ``."""
    g = S.shape[0]
    res = S.clone()
    L = S.new_zeros(g, min(g, r_max))
    done = torch.zeros(g, dtype=torch.bool, device=S.device)
    order: list[int] = []
    while len(order) < L.shape[1]:
        li = int(torch.argmax(res.diagonal().masked_fill(done, -1.0)))
        dii = float(res[li, li])
        if dii <= floor:
            break
        col = res[:, li] / dii**0.5
        col[done] = 0.0
        t = len(order)
        L[:, t] = col
        res -= col[:, None] * col[None, :]
        done[li] = True
        order.append(li)
    return order, L


def pivoted_cholesky(
    operator: KernelOperator, k: int, rtol: float = 1e-14, *, group_size: int = 1, progress: bool = False
) -> tuple[Tensor, Tensor]:
    """Greedy pivoted incomplete Cholesky of ``K``: ``K ≈ F Fᵀ`` with ``F`` [n, k'].

    At each step picks the largest remaining residual diagonal entry, fetches that column through
    ``operator.columns`` and updates the residual diagonal. With ``group_size`` g > 1 it picks the
    group of g consecutive columns with the largest residual trace, fetches the whole group in one
    ``columns`` call and eliminates its columns greedily (block pivoting), up to ``ceil(k/g) g``
    columns. Columns whose residual diagonal is below ``rtol`` times the largest initial diagonal
    are skipped, so k' is smaller than asked once the numerical rank is reached.

    ``progress`` shows a bar over the pivots.

    Returns:
        ``(idx [k'], F [n, k'])``, pivots in selection order.
    """
    g = int(group_size)
    n_groups = _check_groups(operator.n, g)
    k = min(n_groups, -(-int(k) // g)) * g
    d = operator.diagonal().clone()  # [n] residual diagonal
    floor = rtol * float(d.max())
    Ft = torch.zeros(k, operator.n, dtype=operator.dtype, device=operator.device)  # Fᵀ, row-major
    used = torch.zeros(n_groups, dtype=torch.bool, device=d.device)
    pivots: list[int] = []
    offsets = torch.arange(g, device=d.device)
    bar = tqdm(total=k, desc="Nyström pivoted Cholesky", unit="col", disable=not progress, leave=False)
    while len(pivots) < k:
        score = d.reshape(n_groups, g).sum(1).masked_fill(used, -1.0)
        grp = int(torch.argmax(score))
        if float(score[grp]) <= floor:
            break
        used[grp] = True
        local = grp * g + offsets  # [g]
        j = len(pivots)
        block = operator.columns(local) - Ft[:j].T @ Ft[:j, local]  # residual columns [n, g]
        # Greedy pivoted Cholesky of the small residual block S = block[local] [g, g] picks the
        # same pivots as eliminating the g columns one by one; the n-row update is then one
        # triangular solve (BLAS 3) instead of g rank-1 updates of the [n, g] block.
        order, L = _small_pivoted_cholesky(block[local], floor, k - j)
        if not order:
            continue  # the group is used up; try the next one
        P = torch.tensor(order, dtype=torch.long, device=d.device)
        L_P = L[P][:, : len(order)]  # [r, r] lower triangular: S[P][:, P] = L_P L_Pᵀ
        Ft_new = torch.linalg.solve_triangular(L_P, block[:, P].T, upper=False)  # [r, n]
        Ft[j : j + len(order)] = Ft_new
        d -= (Ft_new * Ft_new).sum(0)
        d[local[P]] = 0.0
        d.clamp_(min=0.0)
        pivots.extend((grp * g + P).tolist())
        bar.update(len(order))
    bar.close()
    if len(pivots) < k:
        logger.info("pivoted Cholesky: numerical rank %d reached (asked for %d)", len(pivots), k)
    # F as the transpose of a row-major [k', n] tensor, so that Fᵀ needs no copy.
    return torch.tensor(pivots, dtype=torch.long), Ft[: len(pivots)].T


class NystromPreconditioner:
    """``P⁻¹ = (K̃ + λI)⁻¹`` with ``K̃`` the Nyström approximation from ``k`` inducing columns.

    Build it with :meth:`build`; call it on a vector ``v`` [n] (or a block [n, m]) to get
    ``P⁻¹ v``.

    Attributes:
        G: the factor ``L₂⁻¹ B`` [k, n] (see module docstring).
        lam: ridge ``λ`` (> 0).
        indices: inducing columns [k], sorted (pivot order for ``"pivoted_cholesky"``).
        method: the selection method.
        seconds: construction time [s].
    """

    def __init__(self, G: Tensor, lam: float, indices: Tensor, method: str, seconds: float = 0.0):
        self.G = G
        self.lam = float(lam)
        self.indices = indices
        self.method = method
        self.seconds = seconds

    @property
    def k(self) -> int:
        """Number of inducing columns actually used."""
        return int(self.G.shape[0])

    @property
    def n(self) -> int:
        return int(self.G.shape[1])

    @property
    def name(self) -> str:
        """Short description, e.g. ``"nystrom-leverage,k=200"``."""
        return f"nystrom-{self.method},k={self.k}"

    @classmethod
    def build(
        cls,
        operator: KernelOperator,
        lam: float,
        k: int,
        method: Selection = "leverage",
        *,
        seed: int = 0,
        group_size: int = 1,
        progress: bool = False,
    ) -> NystromPreconditioner:
        """Select ``k`` inducing columns of ``operator`` by ``method`` and factor the preconditioner.

        Args:
            operator: the kernel ``K`` (without ``λI``).
            lam: ridge ``λ`` > 0 of the system ``(K + λI) x = b``.
            k: number of inducing columns (clipped to ``n``), ≥ 1.
            method: ``"random"``, ``"leverage"`` or ``"pivoted_cholesky"``.
            seed: seed of the random selections.
            group_size: select whole groups of this many consecutive columns (``ceil(k/g)``
                groups), for operators whose columns come in blocks (sGDML: 3N per geometry).
            progress: show a bar over the kernel columns fetched.

        Raises:
            ValueError: bad ``method``, ``k < 1`` or ``lam <= 0``.
            SolverError: numerical failure of the factorisations.
        """
        check_selection(method)
        if k < 1:
            raise ValueError(f"Nyström: k must be >= 1; got {k}")
        if not lam > 0:
            raise ValueError(f"Nyström: lam must be > 0; got {lam}")
        t0 = time.perf_counter()
        if method == "pivoted_cholesky":
            idx, F = pivoted_cholesky(operator, k, group_size=group_size, progress=progress)
            B = F.T.contiguous()  # [k, n], K̃ = Bᵀ B
            del F
        else:
            C, idx = _sample_columns(operator, k, method, lam=lam, seed=seed,
                                     group_size=group_size, progress=progress)
            W = C[idx.to(C.device)]
            W = 0.5 * (W + W.T)
            L, _ = stable_cholesky(W, "inducing block W = K[S,S]")
            B = _solve_lower(L, C.T)  # [k, n]
            del C, W, L
        G = cls._factor(B, lam)
        seconds = time.perf_counter() - t0
        logger.info(
            "Nyström preconditioner: %s, k=%d, n=%d, built in %.2f s", method, G.shape[0], G.shape[1],
            seconds,
        )
        return cls(G, lam, idx, method, seconds)

    @staticmethod
    def _factor(B: Tensor, lam: float) -> Tensor:
        """``G = L₂⁻¹ B`` with ``L₂ L₂ᵀ = λI + B Bᵀ``."""
        inner = B @ B.T
        inner.diagonal().add_(lam)
        inner = 0.5 * (inner + inner.T)
        L2, info = torch.linalg.cholesky_ex(inner)
        if int(info) != 0 or not bool(torch.isfinite(L2).all()):
            raise SolverError(
                "Nyström: Cholesky of λI + B Bᵀ failed (non-finite kernel columns?); "
                f"k={B.shape[0]}, λ={lam:.3g}"
            )
        return _solve_lower(L2, B)

    def __call__(self, v: Tensor) -> Tensor:
        """``P⁻¹ v`` for ``v`` [n] or [n, m]."""
        return (v - self.G.T @ (self.G @ v)) / self.lam

    def __repr__(self) -> str:
        return f"NystromPreconditioner({self.name}, n={self.n}, lam={self.lam:.3g})"
