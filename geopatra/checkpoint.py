"""What a geopatra checkpoint carries beyond weights, and how to rebuild a model from one alone.

Lightning checkpoints of :class:`~geopatra.task.ForceFieldTask` hold ``state_dict`` (for EMA runs: the
averaged weights) and, under :data:`CHECKPOINT_KEY`, a record: format version, model kind, class and
constructor arguments, units, the dataset's fingerprint and atoms, and the split.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from geopatra.data.splits import frame_hashes
from geopatra.errors import CheckpointError
from geopatra.models.potential import Potential
from geopatra.units import SGDML_UNITS

CHECKPOINT_KEY = "geopatra"
#: Bumped when the record's layout changes incompatibly.
FORMAT_VERSION = 1


def describe_run(potential: Potential, datamodule) -> dict[str, Any]:
    """The record stored with every checkpoint of a fit (plain types and tensors only)."""
    dataset, split = datamodule.dataset, datamodule.split
    return {
        "format_version": FORMAT_VERSION,
        "kind": potential.kind,
        "class_path": f"{type(potential).__module__}.{type(potential).__qualname__}",
        "init_args": dict(potential.init_args),
        "units": SGDML_UNITS.as_dict(),
        "dataset": {
            "fingerprint": dataset.fingerprint,
            "name": dataset.name,
            "theory": dataset.theory,
            "source": str(Path(dataset.source).resolve()) if dataset.source else "",
            "source_units": dataset.source_units.as_dict(),  # the units the file was read in
            "z": dataset.z.tolist(),
        },
        "split": {key: getattr(split, key).tolist() for key in ("train", "val", "test")},
        "train_frame_hashes": frame_hashes(dataset.R[split.train]).tolist(),
    }


def read_record(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file and check that it is a geopatra checkpoint of a known version."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for foreign files
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(
            f"{path}: not a geopatra checkpoint (no {CHECKPOINT_KEY!r} record); train one with "
            "`geopatra fit` or pass the run's checkpoints/last.ckpt"
        )
    record = checkpoint[CHECKPOINT_KEY]
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: geopatra checkpoint format {version}; this geopatra reads format "
            f"{FORMAT_VERSION}. Retrain, or use the geopatra version that wrote it."
        )
    return checkpoint


def load_potential(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    dtype: str | None = None,
) -> tuple[Potential, dict[str, Any]]:
    """Rebuild the potential of a checkpoint without its config or data; returns it (eval mode,
    parameters frozen) and the record.

    ``dtype`` ("float32"/"float64") rebuilds a model that has a ``dtype`` argument in that precision;
    models without one (sGDML: always float64) accept only ``None`` or ``"float64"``.
    """
    checkpoint = read_record(path, map_location)
    record = checkpoint[CHECKPOINT_KEY]
    module_name, _, class_name = record["class_path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path}: model class {record['class_path']} not found ({err})") from err
    init_args = dict(record["init_args"])
    if dtype is not None:
        if "dtype" in init_args:
            init_args["dtype"] = dtype
        elif dtype != "float64":
            raise CheckpointError(f"{path}: a {record['kind']} model computes in float64 only")
    potential = cls(**init_args)
    prefix = "potential."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    potential.load_state_dict(state)
    potential.eval()
    for parameter in potential.parameters():
        parameter.requires_grad_(False)
    return potential, record


def load_weights_for_fine_tuning(potential: Potential, path: str | os.PathLike, elements: list[int]) -> None:
    """Copy the weights of checkpoint ``path`` into ``potential`` (same class and constructor
    arguments) to fine-tune it on data holding atomic numbers ``elements``.

    Raises:
        CheckpointError: the checkpoint is of another class or architecture, or a kernel model
            (nothing to fine-tune: it is solved from its training data).
        ElementError: ``elements`` holds atomic numbers the checkpoint was never trained on.
    """
    from geopatra.errors import ElementError

    if not potential.trainable:
        raise CheckpointError(f"{path}: {type(potential).__name__} is solved, not trained: it cannot be fine-tuned")
    source, record = load_potential(path)
    if type(source) is not type(potential):
        raise CheckpointError(
            f"{path}: a {record['class_path']} checkpoint; the model to fine-tune is "
            f"{type(potential).__module__}.{type(potential).__qualname__}"
        )
    ours, theirs = dict(potential.init_args), dict(record["init_args"])
    not_architecture = {"pair_chunk_size", "dtype"}  # how it computes, not what it computes
    differ = sorted(k for k in (set(ours) | set(theirs)) - not_architecture if ours.get(k) != theirs.get(k))
    if differ:
        detail = ", ".join(f"{k}: {theirs.get(k)!r} in the checkpoint, {ours.get(k)!r} here" for k in differ)
        raise CheckpointError(f"{path}: the architecture differs ({detail}); fine-tuning needs the same one")
    seen = getattr(source, "seen_elements", None)
    if seen is not None:
        unseen = sorted(int(z) for z in elements if not bool(seen[int(z)]))
        if unseen:
            raise ElementError(
                f"{path}: the fine-tuning data holds atomic numbers {unseen} this checkpoint never saw "
                f"(it was trained on {torch.nonzero(seen).flatten().tolist()}); train from scratch instead"
            )
    state = source.state_dict()
    with torch.no_grad():
        for name, tensor in potential.state_dict().items():
            tensor.copy_(state[name].to(tensor.dtype))
