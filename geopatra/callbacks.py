"""Callbacks the CLI adds to every run: EMA of the weights, and checkpoints in the run directory."""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint


def _trainable(pl_module: L.LightningModule) -> bool:
    potential = getattr(pl_module, "potential", None)
    return bool(getattr(potential, "trainable", True))


class ExponentialMovingAverage(EMAWeightAveraging):
    """EMA of the weights (Lightning's), used for validation, test and the saved model.

    Does nothing for kernel models, which have no weights to average.
    """

    def __init__(self, decay: float = 0.99, update_starting_at_step: int | None = None) -> None:
        super().__init__(decay=decay, update_starting_at_step=update_starting_at_step)

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
