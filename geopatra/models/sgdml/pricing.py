"""What a permutation group will cost before the solve pays for it.

One iteration of the matrix-free solver is one kernel product ``K v``, whose work grows as
``S · M² · D`` (S permutations, M training geometries, D descriptor entries; see
:mod:`geopatra.models.sgdml.kernel`). :func:`price_products` times that product on this machine for
each candidate group on two samples of evenly spaced training geometries (m and m / 2) and
extrapolates ``a + c · M²`` to all of them, ``a`` being the fixed cost of a product (dispatch,
allocation), which dominates at small m: a few seconds of calibration instead of minutes of surprise.
:func:`candidate_groups` offers the identity, the detected group and subgroups between them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geopatra.models.sgdml.kernel import SGDMLKernel
from geopatra.models.sgdml.symmetries import largest_subgroup

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProductPrice:
    """The estimated cost of one kernel product of a group on all training geometries.

    Attributes:
        perms: the group's permutations [S, N].
        seconds: estimated wall time of one product ``K v`` on all M geometries [s].
        measured_frames: geometries the product was timed on (``m``).
    """

    perms: np.ndarray
    seconds: float
    measured_frames: int

    @property
    def n_perms(self) -> int:
        return int(self.perms.shape[0])


def candidate_groups(perms: np.ndarray) -> list[np.ndarray]:
    """The identity, the group ``perms`` [S, N] (identity first) and the greedy subgroups of at most
    3, 9, 27, ... elements in between, distinct, smallest first."""
    n = perms.shape[1]
    groups = {1: np.arange(n, dtype=np.int64)[None]}
    size = 3
    while size < len(perms):
        sub = largest_subgroup(perms, np.ones(len(perms)), size)
        groups.setdefault(len(sub), sub)
        size *= 3
    groups[len(perms)] = np.asarray(perms, dtype=np.int64)
    return [groups[s] for s in sorted(groups)]


def price_products(
    R: Tensor, groups: list[np.ndarray], sigma: float, device: torch.device, sample_frames: int = 256,
    repeats: int = 2,
) -> list[ProductPrice]:
    """Estimated time of one kernel product on all geometries ``R`` [M, N, 3] (Å) for each group.

    The product is timed (best of ``repeats`` after one untimed call) on ``m = min(M, sample_frames)``
    and on ``m / 2`` evenly spaced geometries; ``a + c · m²`` through the two times gives the estimate
    at M (the time at m itself when m = M).
    """
    M = R.shape[0]
    m = min(M, sample_frames)
    prices = []
    for perms in groups:
        t_m = _time_product(R, perms, m, sigma, device, repeats)
        if m == M:
            seconds = t_m
        else:
            half = max(1, m // 2)
            t_half = _time_product(R, perms, half, sigma, device, repeats)
            c = max(t_m - t_half, 0.0) / (m**2 - half**2)
            seconds = max(t_m - c * m**2, 0.0) + c * M**2
        prices.append(ProductPrice(perms=perms, seconds=seconds, measured_frames=m))
    return prices


def _time_product(R: Tensor, perms: np.ndarray, m: int, sigma: float, device: torch.device, repeats: int) -> float:
    """Best wall time [s] of one product ``K v`` on ``m`` evenly spaced geometries of ``R``."""
    frames = np.unique(np.linspace(0, R.shape[0] - 1, m).round().astype(int))
    op = SGDMLKernel.of(R[frames], torch.as_tensor(perms), sigma, device=device)
    v = torch.randn(op.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(op.device)
    op.matvec(v)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        op.matvec(v)
        if op.device.type == "cuda":
            torch.cuda.synchronize(op.device)
        best = min(best, time.perf_counter() - start)
    return best


def within_budget(prices: list[ProductPrice], max_product_seconds: float) -> ProductPrice:
    """The largest group whose product fits ``max_product_seconds`` (the smallest group if none does)."""
    fitting = [p for p in prices if p.seconds <= max_product_seconds]
    return max(fitting, key=lambda p: p.n_perms) if fitting else min(prices, key=lambda p: p.n_perms)


def price_group(
    R: Tensor, perms: np.ndarray, max_product_seconds: float | None, device: torch.device
) -> tuple[np.ndarray, list[ProductPrice]]:
    """Price the group ``perms`` [S, N] and its subgroups on the training geometries ``R`` and log the
    estimates; return the largest group within ``max_product_seconds`` (all of ``perms`` when it is
    None) and the prices."""
    prices = price_products(R, candidate_groups(perms), sigma=10.0, device=device)  # cost is σ-independent
    for price in prices:
        logger.info("SGDML: %d permutations: one kernel product on %d geometries ≈ %.3g s (%.3g min per 100 CG "
                    "iterations; timed on %d)", price.n_perms, R.shape[0], price.seconds, 100 * price.seconds / 60,
                    price.measured_frames)
    if max_product_seconds is None:
        return perms, prices
    chosen = within_budget(prices, max_product_seconds)
    if chosen.n_perms < len(perms):
        logger.warning("SGDML: keeping %d of %d permutations, the largest group whose kernel product fits "
                       "max_product_seconds = %g s (≈ %.3g s; all %d ≈ %.3g s)", chosen.n_perms, len(perms),
                       max_product_seconds, chosen.seconds, len(perms), prices[-1].seconds)
    return chosen.perms, prices
