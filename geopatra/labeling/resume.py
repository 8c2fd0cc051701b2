"""The labelling checkpoint format (written with :func:`geopatra.data.npz.write_npz_atomic`)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from geopatra.data.npz import write_npz_atomic
from geopatra.errors import CheckpointError

#: Value of the ``kind`` key that marks a labelling checkpoint (never a dataset).
CHECKPOINT_KIND = "geopatra-label-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(
    path: str | Path, *, settings: dict, state: dict[str, np.ndarray], rng_state: dict
) -> None:
    """Atomically write a labelling checkpoint: run settings, MD state arrays and the RNG state.

    Args:
        settings: JSON-serialisable run settings; a resume must present the same ones.
        state: arrays (positions, momenta, frames so far, step counter, ...).
        rng_state: ``numpy.random.Generator.bit_generator.state``.
    """
    arrays: dict[str, Any] = {
        "kind": np.str_(CHECKPOINT_KIND),
        "version": np.int64(CHECKPOINT_VERSION),
        "settings": np.str_(json.dumps(settings, sort_keys=True)),
        "rng_state": np.str_(json.dumps(rng_state, sort_keys=True, default=int)),
    }
    arrays.update(state)
    write_npz_atomic(path, arrays, compress=False)


def load_checkpoint(path: str | Path, *, settings: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`save_checkpoint` for the same ``settings``.

    Returns:
        (state arrays, rng_state).

    Raises:
        CheckpointError: not a labelling checkpoint, another version, or other run settings.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path}: unreadable labelling checkpoint ({exc}); delete it to start over."
        ) from exc
    if str(contents.get("kind", "")) != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{path}: not a geopatra labelling checkpoint (no kind={CHECKPOINT_KIND!r})."
        )
    if int(contents["version"]) != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {int(contents['version'])}; "
            f"expected {CHECKPOINT_VERSION}. "
            "Delete it to start over."
        )
    stored = json.loads(str(contents.pop("settings")))
    expected = json.loads(json.dumps(settings, sort_keys=True))
    if stored != expected:
        diff = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
        raise CheckpointError(
            f"{path}: checkpoint of a run with other settings (differs in {diff}); rerun with the "
            "original options, or delete the checkpoint (or choose another --output) to start over."
        )
    rng_state = json.loads(str(contents.pop("rng_state")))
    for key in ("kind", "version"):
        contents.pop(key)
    return contents, rng_state
