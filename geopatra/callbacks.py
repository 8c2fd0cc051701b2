"""Callbacks of every run: EMA of the weights, checkpoints in the run directory, and the random state
that a resumed fit continues from."""

from __future__ import annotations

import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, WeightAveraging

from geopatra.checkpoint import CHECKPOINT_KEY


def _trainable(pl_module: L.LightningModule) -> bool:
    potential = getattr(pl_module, "potential", None)
    return bool(getattr(potential, "trainable", True))


class WarmupEMA:
    """EMA update with warm-up: after n updates the decay is min(decay, (1 + n) / (10 + n)), so
    early averages forget the random initial weights (with a fixed decay of 0.99, 10 % of the
    step-1 weights remain after 230 updates; with the warm-up, 0.2 %).

    A ``multi_avg_fn`` of :class:`torch.optim.swa_utils.AveragedModel`: updates the averaged tensors
    of one device and dtype in place, one multi-tensor operation for all of them rather than a Python
    call per tensor (experiments/results/step_time.md). Tensors that are not floating point (e.g. the
    seen-elements mask) take the model's value.
    """

    def __init__(self, decay: float, warmup: bool) -> None:
        self.decay, self.warmup = decay, warmup

    @torch.no_grad()
    def __call__(self, averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not averaged:
            return
        if not averaged[0].is_floating_point():
            torch._foreach_copy_(averaged, current)
            return
        decay = torch.as_tensor(self.decay, dtype=torch.float64, device=num_averaged.device)
        if self.warmup:
            n = num_averaged.to(torch.float64)
            decay = torch.minimum(decay, (1.0 + n) / (10.0 + n))
        # averaged <- decay * averaged + (1 - decay) * current; a constant tensor stays exactly constant.
        # The 0-d weight is read on the host (as AveragedModel reads its update count every update anyway).
        torch._foreach_lerp_(averaged, current, (1.0 - decay).to(averaged[0].dtype))


class ExponentialMovingAverage(WeightAveraging):
    """EMA of the weights, used for validation, test and the saved model (Lightning's weight
    averaging with :class:`WarmupEMA`; ``warmup=False`` gives the plain fixed-decay EMA).

    Does nothing for kernel models, which have no weights to average.
    """

    def __init__(self, decay: float = 0.99, update_starting_at_step: int | None = None, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        super().__init__(multi_avg_fn=WarmupEMA(decay, warmup))
        self.update_starting_at_step = update_starting_at_step

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        start = self.update_starting_at_step
        return step_idx is not None and (start is None or step_idx >= start)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if _trainable(pl_module):
            super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is not None:
            super().on_train_end(trainer, pl_module)


class RunCheckpoint(ModelCheckpoint):
    """Keeps ``last.ckpt`` and the best checkpoint by validation force MAE in ``<run dir>/checkpoints``."""

    def __init__(self, run_dir: str, monitor: str = "val/force_mae_kcal_mol_A") -> None:
        super().__init__(
            dirpath=os.path.join(run_dir, "checkpoints"),
            filename="best-epoch{epoch:03d}",
            auto_insert_metric_name=False,
            monitor=monitor,
            mode="min",
            save_top_k=1,
            save_last=True,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def _save_last_if_stale(self, trainer: L.Trainer) -> None:
        """Lightning (2.6) writes ``last.ckpt`` only when the best checkpoint changed, so a run whose
        validation error stopped falling would resume from long ago: write it at every save point."""
        if not self._should_skip_saving_checkpoint(trainer):  # skipped when this step is saved already
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class RandomState(Callback):
    """Saves the torch, numpy and Python random states in every checkpoint and restores them when a
    fit resumes from it, so that a resumed run draws what an uninterrupted one would have drawn."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(state_dict["python"])

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        """Checkpoints written before this callback keep the states in geopatra's record."""
        legacy = checkpoint.get(CHECKPOINT_KEY, {}).get("rng")
        if legacy is not None and self.state_key not in checkpoint.get("callbacks", {}):
            self.load_state_dict(legacy)
