"""Typed errors raised at the boundaries of geopatra (readers, datamodule, solvers, calculator).

Every message says what went wrong, where (file, key), what was expected versus found, and the fix.
"""

from __future__ import annotations


class GeopatraError(Exception):
    """Base class of every error geopatra raises on purpose."""


class DataError(GeopatraError, ValueError):
    """A dataset file or array is missing something, has the wrong shape, or holds bad values."""


class MissingKeyError(DataError, KeyError):
    """A required key (e.g. ``F`` in an npz file) is absent."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ShapeError(DataError):
    """An array has a shape that does not fit the others (frames, atoms, 3)."""


class NonFiniteError(DataError):
    """An array holds NaN or inf."""


class ElementError(DataError):
    """An atomic number is zero, negative or beyond the periodic table, or unknown to a model."""


class SplitError(DataError):
    """Too few frames for the requested split, overlapping splits, or a split of another dataset."""


class UnitError(GeopatraError, ValueError):
    """A unit string is unknown, or units are missing where they are required."""


class DownloadError(GeopatraError, OSError):
    """A download failed, or the file it produced failed verification."""


class SolverError(GeopatraError, RuntimeError):
    """A linear solve failed (Cholesky with maximal jitter, CG without convergence) or would not fit.

    ``iterations`` and ``residual`` (final relative residual) are set when an iterative solve failed.
    """

    def __init__(self, message: str, *, iterations: int | None = None, residual: float | None = None):
        super().__init__(message)
        self.iterations = iterations
        self.residual = residual


class ConfigurationError(GeopatraError, ValueError):
    """Settings that cannot work together (e.g. a kernel model on several processes)."""


class CheckpointError(GeopatraError, ValueError):
    """A file is not a geopatra checkpoint, is of the wrong kind, or comes from an incompatible version."""


class PeriodicSystemError(GeopatraError, ValueError):
    """A periodic system the models cannot describe: a singular cell, or a molecule that meets its
    own image (geopatra models describe isolated molecules; whole molecules in a box are unwrapped)."""


class IncompatibleMoleculeError(GeopatraError, ValueError):
    """A kernel model was asked about a molecule other than the one it was trained on."""
