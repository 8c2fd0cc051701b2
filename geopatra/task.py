"""One LightningModule for every potential: neural models are optimised, kernel models solved.

``ForceFieldTask`` wraps a :class:`~geopatra.models.potential.Potential`. Training a neural model
minimises weighted energy and force errors; a kernel model (``potential.trainable = False``) is solved
in ``on_fit_start`` and then validated and tested by the same loops as any model.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from geopatra.checkpoint import CHECKPOINT_KEY, describe_run
from geopatra.errors import SplitError
from geopatra.metrics import ErrorAccumulator, atoms_per_molecule
from geopatra.models.forces import energy_and_forces
from geopatra.models.potential import Potential

logger = logging.getLogger(__name__)

MONITOR = "val/force_mae_kcal_mol_A"


class ForceFieldTask(L.LightningModule):
    """Train, validate and test a potential on energies and forces.

    Args:
        potential: the model (``class_path`` + ``init_args`` in YAML).
        energy_weight: weight of the energy term of the loss [per (kcal/mol)²].
        force_weight: weight of the force term of the loss [per (kcal/mol/Å)²].
        loss: ``mse`` or ``huber`` (with ``huber_delta`` in the units of each term).
        lr, weight_decay: AdamW settings. lr_factor, lr_patience, min_lr: ReduceLROnPlateau on the
            validation force MAE. Ignored (with a log message) for kernel models.
    """

    def __init__(
        self,
        potential: Potential,
        energy_weight: float = 1.0,
        force_weight: float = 10.0,
        loss: Literal["mse", "huber"] = "mse",
        huber_delta: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_factor: float = 0.5,
        lr_patience: int = 10,
        min_lr: float = 1e-6,
    ) -> None:
        super().__init__()
        # Under LightningCLI the potential is saved as its config (class_path + init_args), which is what
        # `geopatra test --ckpt_path` re-parses; the weights travel in the state_dict either way.
        self.save_hyperparameters(logger=False)
        self.potential = potential
        self.automatic_optimization = potential.trainable
        self._errors = {"val": ErrorAccumulator(), "test": ErrorAccumulator()}
        self._test_predictions: list[dict[str, torch.Tensor]] = []
        #: set in on_fit_start and carried by checkpoints: dataset, split, units (see checkpoint.py)
        self.run_record: dict[str, Any] = {}

    # --- the model ----------------------------------------------------------------------------------
    def forward(self, batch, training: bool = False):
        """Energies [n_mol] (kcal/mol) and forces [n_atoms, 3] (kcal/mol/Å) of a batch."""
        pos = batch.pos.to(self.potential.compute_dtype)
        return energy_and_forces(
            self.potential, pos, batch.z, batch.batch, batch.num_graphs, training=training
        )

    def _loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(prediction.dtype)
        if self.hparams.loss == "huber":
            return F.huber_loss(prediction, target, delta=self.hparams.huber_delta)
        return F.mse_loss(prediction, target)

    # --- fit ----------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        train, val = datamodule.train_set, datamodule.val_set
        self.run_record = describe_run(self.potential, datamodule)
        if self.potential.trainable:
            self.potential.fit_to_data(train, val)
            return
        ignored = {k: self.hparams[k] for k in ("lr", "weight_decay", "lr_factor", "lr_patience")}
        logger.info(
            "%s is a kernel model: it is solved once here, then validated; max_epochs=%s and the "
            "optimiser settings %s do not apply to it.",
            type(self.potential).__name__,
            self.trainer.max_epochs,
            ignored,
        )
        if not self.potential.is_fitted:
            self.potential.fit_to_data(train, val)
        self.trainer.fit_loop.max_epochs = 1
        self.trainer.limit_train_batches = 1

    def training_step(self, batch, batch_idx: int):
        if not self.potential.trainable:
            # The solve in on_fit_start is this model's one optimisation step; stepping the (empty)
            # optimiser records it, so checkpointing and resuming see a finished epoch.
            self.optimizers().step()
            return None
        energy, forces = self(batch, training=True)
        loss_e = self._loss(energy, batch.energy)
        loss_f = self._loss(forces, batch.forces)
        loss = self.hparams.energy_weight * loss_e + self.hparams.force_weight * loss_f
        size = batch.num_graphs
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/energy_loss", loss_e, batch_size=size)
        self.log("train/force_loss", loss_f, batch_size=size)
        self.log("train/energy_weight", self.hparams.energy_weight, batch_size=size)
        self.log("train/force_weight", self.hparams.force_weight, batch_size=size)
        return loss

    def configure_optimizers(self):
        if not self.potential.trainable:
            return None
        optimizer = torch.optim.AdamW(
            self.potential.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=self.hparams.lr_factor,
            patience=self.hparams.lr_patience,
            min_lr=self.hparams.min_lr,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": MONITOR, "interval": "epoch"},
        }

    # --- evaluation ---------------------------------------------------------------------------------
    def _evaluate(self, batch, stage: str) -> None:
        energy, forces = self(batch, training=False)
        counts = atoms_per_molecule(batch.batch, batch.num_graphs)
        self._errors[stage].update(energy, batch.energy, counts, forces, batch.forces)
        if stage == "test":
            self._test_predictions.append(
                {
                    "frame": batch.frame.cpu(),
                    "energy_pred": energy.double().cpu(),
                    "energy_true": batch.energy.double().cpu(),
                    "forces_pred": forces.double().cpu(),
                    "forces_true": batch.forces.double().cpu(),
                    "n_atoms": counts.cpu(),
                }
            )

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_epoch(self, stage: str) -> dict[str, float]:
        metrics = self._errors[stage].compute()
        self._errors[stage].reset()
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name.startswith("force_mae"))
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._errors["val"].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_start(self) -> None:
        self._guard_against_leakage()
        self._errors["test"].reset()
        self._test_predictions = []

    def on_test_epoch_end(self) -> None:
        metrics = self._log_epoch("test")
        from geopatra.reports import write_test_report

        write_test_report(self.trainer.default_root_dir, metrics, self._test_predictions, self)

    def _guard_against_leakage(self) -> None:
        """Refuse to test on frames the checkpoint was trained on (by dataset fingerprint + indices,
        and by geometry hashes for a different file holding the same frames)."""
        record = self.run_record
        datamodule = getattr(self.trainer, "datamodule", None)
        if not record or datamodule is None:
            return
        from geopatra.data.splits import frame_hashes

        test = datamodule.test_set
        if record["dataset"]["fingerprint"] == datamodule.dataset.fingerprint:
            overlap = np.intersect1d(record["split"]["train"], test.indices)
        else:
            overlap = test.indices[np.isin(frame_hashes(test.R), record["train_frame_hashes"])]
        if overlap.size:
            raise SplitError(
                f"{overlap.size} test frame(s) (e.g. frame {int(overlap[0])}) were in the training set "
                "of this checkpoint; testing on them would report training error. Use the run's "
                "split.npz (--data.split_file) or a different dataset."
            )

    # --- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            **self.run_record,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
                "python": random.getstate(),
            },
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = dict(checkpoint.get(CHECKPOINT_KEY, {}))
        rng = record.pop("rng", None)
        self.run_record = record
        if rng is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            torch.set_rng_state(rng["torch"])
            name, keys, *rest = rng["numpy"]
            np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
            random.setstate(rng["python"])
