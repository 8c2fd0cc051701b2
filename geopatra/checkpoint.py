"""What a geopatra checkpoint carries beyond weights, and how to rebuild a model from one alone.

Lightning checkpoints of :class:`~geopatra.task.ForceFieldTask` hold ``state_dict`` (for EMA runs: the
averaged weights) and, under :data:`CHECKPOINT_KEY`, the run record (:class:`~geopatra.run_record.RunRecord`:
model kind, class and constructor arguments, units, the datasets trained on and their splits).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from geopatra.errors import CheckpointError
from geopatra.models.potential import Potential
from geopatra.run_record import RunRecord

CHECKPOINT_KEY = "geopatra"


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Any], RunRecord]:
    """Load a checkpoint file: the raw dictionary (state_dict, ...) and its geopatra :class:`RunRecord`."""
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
    return checkpoint, RunRecord.from_dict(checkpoint[CHECKPOINT_KEY], where=str(path))


def load_potential(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    dtype: str | None = None,
) -> tuple[Potential, RunRecord]:
    """Rebuild the potential of a checkpoint without its config or data; returns it (eval mode,
    parameters frozen) and the record.

    ``dtype`` ("float32"/"float64") rebuilds a model that has a ``dtype`` argument in that precision;
    models without one (sGDML: always float64) accept only ``None`` or ``"float64"``.
    """
    checkpoint, record = read_checkpoint(path, map_location)
    module_name, _, class_name = record.class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(f"{path}: model class {record.class_path} not found ({err})") from err
    init_args = dict(record.init_args)
    if dtype is not None:
        if "dtype" in init_args:
            init_args["dtype"] = dtype
        elif dtype != "float64":
            raise CheckpointError(f"{path}: a {record.kind} model computes in float64 only")
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
            f"{path}: a {record.class_path} checkpoint; the model to fine-tune is "
            f"{type(potential).__module__}.{type(potential).__qualname__}"
        )
    # the rebuilt model's arguments, not the record's: an argument added after the checkpoint was
    # written is absent from its record and takes its default there, as it does here
    ours, theirs = dict(potential.init_args), dict(source.init_args)
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
