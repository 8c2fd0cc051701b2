"""The kernel operator interface the iterative solvers work on, and a dense implementation.

An operator represents a symmetric positive semi-definite kernel matrix ``K`` [n, n] (float64)
*without* the ridge term ``λI``; the solvers add ``λI`` themselves. Implementations for large
problems (the sGDML kernel at MD22 scale) compute products block by block and never hold the
whole ``K`` in memory.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class KernelOperator(Protocol):
    """Matrix-free access to a symmetric PSD kernel matrix ``K`` [n, n].

    Attributes:
        n: number of rows (= columns) of ``K``.
        dtype: floating dtype of every returned tensor (float64 for sGDML).
        device: device of every returned tensor.
    """

    n: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, v: Tensor) -> Tensor:
        """``K @ v`` for ``v`` [n]; returns [n]."""
        ...

    def columns(self, idx: Tensor) -> Tensor:
        """Columns ``K[:, idx]`` for a LongTensor ``idx`` [k]; returns [n, k]."""
        ...

    def diagonal(self) -> Tensor:
        """The diagonal of ``K``; returns [n]."""
        ...


class DenseOperator:
    """:class:`KernelOperator` over an explicit matrix, for tests and small problems.

    Args:
        K: symmetric PSD matrix [n, n]; kept by reference (not copied).

    Raises:
        ValueError: if ``K`` is not a square 2-D floating-point tensor.
    """

    def __init__(self, K: Tensor) -> None:
        if K.ndim != 2 or K.shape[0] != K.shape[1]:
            raise ValueError(f"DenseOperator: K must be square [n, n]; got shape {tuple(K.shape)}")
        if not K.is_floating_point():
            raise ValueError(f"DenseOperator: K must be floating point; got dtype {K.dtype}")
        self.K = K
        self.n: int = int(K.shape[0])
        self.dtype: torch.dtype = K.dtype
        self.device: torch.device = K.device

    def matvec(self, v: Tensor) -> Tensor:
        """``K @ v`` for ``v`` [n] (or [n, m]); returns the same shape."""
        return self.K @ v

    def columns(self, idx: Tensor) -> Tensor:
        """``K[:, idx]`` [n, k]."""
        return self.K[:, idx.to(self.K.device)]

    def diagonal(self) -> Tensor:
        """``diag(K)`` [n] (a copy)."""
        return self.K.diagonal().clone()

    def __repr__(self) -> str:
        return f"DenseOperator(n={self.n}, dtype={self.dtype}, device={self.device})"
