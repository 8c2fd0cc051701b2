"""Validation of user-supplied arrays: shapes, finiteness, atomic numbers. Raises typed errors."""

from __future__ import annotations

import numpy as np

from geopatra.errors import ElementError, NonFiniteError, ShapeError

#: Largest atomic number geopatra accepts (oganesson).
MAX_ATOMIC_NUMBER = 118


def validate_arrays(
    R: np.ndarray, z: np.ndarray, E: np.ndarray, F: np.ndarray, *, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check and canonicalise (R, z, E, F); returns float64/int64 arrays with E of shape (n,).

    Raises :class:`ShapeError`, :class:`NonFiniteError` or :class:`ElementError` naming ``source``.
    """
    R = np.asarray(R)
    z = np.asarray(z)
    E = np.asarray(E)
    F = np.asarray(F)
    if R.ndim != 3 or R.shape[-1] != 3:
        raise ShapeError(
            f"{source}: 'R' has shape {R.shape}; expected (n_frames, n_atoms, 3). "
            "Positions must be stored frame by frame."
        )
    n_frames, n_atoms = R.shape[:2]
    if n_frames == 0 or n_atoms == 0:
        raise ShapeError(f"{source}: 'R' has shape {R.shape}; expected at least one frame and atom.")
    if z.ndim == 2 and z.shape[0] == n_frames and np.all(z == z[:1]):
        z = z[0]  # per-frame copies of the same atomic numbers
    if z.ndim != 1 or z.shape[0] != n_atoms:
        raise ShapeError(
            f"{source}: 'z' has shape {z.shape}; expected ({n_atoms},) to match 'R' {R.shape}. "
            "All frames must hold the same molecule in the same atom order."
        )
    if E.ndim == 2 and E.shape[1] == 1:
        E = E[:, 0]
    if E.shape != (n_frames,):
        raise ShapeError(
            f"{source}: 'E' has shape {E.shape}; expected ({n_frames},) or ({n_frames}, 1) "
            f"to match {n_frames} frames in 'R'."
        )
    if F.shape != R.shape:
        raise ShapeError(
            f"{source}: 'F' has shape {F.shape}; expected {R.shape} (n_frames, n_atoms, 3) like 'R'."
        )
    integral = np.issubdtype(z.dtype, np.integer) or (
        np.issubdtype(z.dtype, np.floating) and np.all(z == np.round(z))
    )
    if not integral:
        raise ElementError(f"{source}: 'z' holds non-integer values; expected atomic numbers.")
    z = z.astype(np.int64)
    bad = (z < 1) | (z > MAX_ATOMIC_NUMBER)
    if np.any(bad):
        atom = int(np.flatnonzero(bad)[0])
        raise ElementError(
            f"{source}: 'z' holds atomic number {int(z[atom])} at atom {atom}; expected 1..."
            f"{MAX_ATOMIC_NUMBER}. Zero usually marks padding, which geopatra files do not use."
        )
    arrays = {}
    for key, array in (("R", R), ("E", E), ("F", F)):
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise ShapeError(f"{source}: {key!r} has dtype {array.dtype}; expected numbers.") from None
        finite = np.isfinite(array)
        if not finite.all():
            frame = int(np.flatnonzero(~finite.reshape(n_frames, -1).all(axis=1))[0])
            raise NonFiniteError(
                f"{source}: {key!r} holds NaN or inf (first in frame {frame}); remove or relabel "
                "those frames."
            )
        arrays[key] = np.ascontiguousarray(array)
    return arrays["R"], np.ascontiguousarray(z), arrays["E"], arrays["F"]
