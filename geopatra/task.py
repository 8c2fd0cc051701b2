"""One LightningModule for every potential: neural models are optimised, kernel models solved.

``ForceFieldTask`` wraps a :class:`~geopatra.models.potential.Potential`. Training a neural model
minimises weighted energy and force errors; a kernel model (``potential.trainable = False``) is solved
in ``on_fit_start`` and then validated and tested by the same loops as any model.

The force-field recipe (the defaults): energy error per atom, both errors divided by the RMS of the
training forces (so the loss is O(1) whatever the units, and gradient clipping means something),
force-dominated weights, AdamW with AMSGrad, a linear warm-up then a cosine decay to ``min_lr`` over
the run's budget (``max_steps`` or ``max_time``, whichever ends first; ``max_epochs`` otherwise).
Diagnostics logged in ``metrics.csv``: learning rate, gradient norm before clipping, the fraction
of clipped steps and the training-set errors since the previous validation, and whatever the
potential reports at validation (:meth:`~geopatra.models.potential.Potential.validation_diagnostics`).

The optimiser and the schedule are this task's arguments, not Lightning's ``OptimizerCallable`` and
``LRSchedulerCallable``: the schedule reads the run's time budget from the trainer, which a scheduler
built from the optimiser alone cannot see, and ``geopatra test/fit --ckpt_path`` re-parses a
checkpoint's saved arguments, so replacing them would stop earlier checkpoints from being tested or
resumed.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Timer

from geopatra.checkpoint import CHECKPOINT_KEY
from geopatra.errors import ConfigurationError, DataError
from geopatra.metrics import ErrorAccumulator, atoms_per_molecule
from geopatra.models.compiled_forces import CompiledEnergyAndForces
from geopatra.models.forces import energy_and_forces
from geopatra.models.potential import Potential
from geopatra.models.transformer.readout import force_rms
from geopatra.run_record import RunRecord
from geopatra.strategy import SolvedModelDDPStrategy

logger = logging.getLogger(__name__)

MONITOR = "val/force_mae_kcal_mol_A"


class ForceFieldTask(L.LightningModule):
    """Train, validate and test a potential on energies and forces.

    Args:
        potential: the model (``class_path`` + ``init_args`` in YAML).
        energy_weight, force_weight: weights of the energy and force terms of the loss (of the
            squared normalised errors by default; per (kcal/mol)² and (kcal/mol/Å)² without
            normalisation).
        loss: ``mse`` or ``huber`` (``huber_delta`` in the units of the (normalised) errors).
        energy_loss: ``per_atom`` (energy error divided by the molecule's atom count, as MACE does)
            or ``total`` (per molecule).
        normalize_loss: divide force errors by the RMS of the training force components [kcal/mol/Å]
            and energy errors by ``energy_error_scale``; False: raw kcal/mol units.
        energy_error_scale: the energy normaliser: ``force_rms`` (the same as forces) or
            ``energy_std`` (the standard deviation of the training energies, per atom with
            ``energy_loss: per_atom``), which makes both terms relative errors.
        lr, weight_decay, amsgrad: AdamW settings.
        scheduler: ``cosine`` (warm-up, then cosine from ``lr`` to ``min_lr`` over the budget),
            ``constant`` (warm-up, then ``lr``), or ``plateau`` (ReduceLROnPlateau on the validation
            force MAE with ``lr_factor``, ``lr_patience`` counted in validations, no warm-up).
        warmup_steps: optimiser steps of linear warm-up from ``lr / warmup_steps`` to ``lr``.
        init_from: fine-tune: start from the weights of this checkpoint (same model class and
            architecture, elements it was trained on) instead of random ones; the per-element energy
            shifts are fitted anew on the new data, the force scale is the checkpoint's. A new run
            (its own split and run directory); ``--ckpt_path`` instead resumes an interrupted run.
        compile: compute training energies and forces with one ``torch.compile``'d graph
            (:class:`~geopatra.models.compiled_forces.CompiledEnergyAndForces`): a faster step after
            minutes of compilation on the first batch of each shape. Validation and test run eagerly.
        Everything but the potential is ignored (with a log message) for kernel models.
    """

    def __init__(
        self,
        potential: Potential,
        energy_weight: float = 1.0,
        force_weight: float = 100.0,
        loss: Literal["mse", "huber"] = "mse",
        huber_delta: float = 1.0,
        energy_loss: Literal["per_atom", "total"] = "per_atom",
        normalize_loss: bool = True,
        energy_error_scale: Literal["force_rms", "energy_std"] = "force_rms",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        amsgrad: bool = True,
        scheduler: Literal["cosine", "constant", "plateau"] = "cosine",
        warmup_steps: int = 100,
        lr_factor: float = 0.5,
        lr_patience: int = 10,
        min_lr: float = 1e-6,
        init_from: str | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("loss", loss, ("mse", "huber")),
            ("energy_loss", energy_loss, ("per_atom", "total")),
            ("energy_error_scale", energy_error_scale, ("force_rms", "energy_std")),
            ("scheduler", scheduler, ("cosine", "constant", "plateau")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0 <= min_lr <= lr:
            raise ValueError(f"need 0 <= min_lr <= lr, got min_lr={min_lr}, lr={lr}")
        if compile and potential.trainable and potential.batch_layout(torch.zeros(1, dtype=torch.long), 1) is None:
            raise ConfigurationError(f"compile: {type(potential).__name__} cannot be compiled for training with this "
                                     "configuration (e.g. neighbour lists within a cutoff); train it without compile")
        # Under LightningCLI the potential is saved as its config (class_path + init_args), which is what
        # `geopatra test --ckpt_path` re-parses; the weights travel in the state_dict either way.
        self.save_hyperparameters(logger=False)
        self.potential = potential
        self.automatic_optimization = potential.trainable
        self._errors = {"train": ErrorAccumulator(), "val": ErrorAccumulator(), "test": ErrorAccumulator()}
        #: loss normalisers set in on_fit_start: forces [kcal/mol/Å], energies [kcal/mol (per atom)]
        self._error_scale = 1.0
        self._energy_scale = 1.0
        self._steps_since_val, self._clipped_since_val = 0, 0
        self._is_first_batch_of_validation = False
        self._fit_start = time.perf_counter()
        self._test_predictions: list[dict[str, torch.Tensor]] = []
        #: built at the first training step, after the model is on its device and after the weight average
        #: has copied this module in setup (so no copy holds one); not part of the state dict
        self._compiled_forces: CompiledEnergyAndForces | None = None
        #: set in on_fit_start and carried by checkpoints: datasets, splits, units (see run_record.py)
        self.run_record: RunRecord | None = None

    # --- the model ----------------------------------------------------------------------------------
    def forward(self, batch, training: bool = False):
        """Energies [n_mol] (kcal/mol) and forces [n_atoms, 3] (kcal/mol/Å) of a batch."""
        pos = batch.pos.to(self.potential.compute_dtype)
        if training and self.hparams.compile:
            if self._compiled_forces is None:
                self._compiled_forces = CompiledEnergyAndForces(self.potential)
            return self._compiled_forces(pos, batch.z, batch.batch, batch.num_graphs)
        return energy_and_forces(
            self.potential, pos, batch.z, batch.batch, batch.num_graphs, training=training
        )

    def _loss(self, error: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """Loss of (prediction - target) errors divided by ``scale`` (default: the force normaliser)."""
        error = error / (self._error_scale if scale is None else scale)
        if self.hparams.loss == "huber":
            return F.huber_loss(error, torch.zeros_like(error), delta=self.hparams.huber_delta)
        return error.square().mean()

    # --- fit ----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.refuse_unshared_solve(self.trainer)

    def refuse_unshared_solve(self, trainer: L.Trainer) -> None:
        """Raise ConfigurationError if a solved (kernel) model would be fitted on several processes
        that cannot share its solve. The ``geopatra`` command calls this before any process starts."""
        if (not self.potential.trainable and trainer.world_size > 1
                and not isinstance(trainer.strategy, SolvedModelDDPStrategy)):
            raise ConfigurationError(
                f"{type(self.potential).__name__} is solved, not trained: its {trainer.world_size} "
                "processes share the solve under --trainer.strategy ddp (the geopatra command then uses "
                f"geopatra.strategy.SolvedModelDDPStrategy), not under {type(trainer.strategy).__name__}"
            )

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        train, val = self._fit_data(datamodule)
        self.run_record = RunRecord.describe(self.potential, datamodule.datasets, datamodule.splits)
        self._fit_start = time.perf_counter()
        if self.hparams.init_from and self.trainer.ckpt_path is None:
            self._fine_tune_start(train, val)
        elif self.potential.trainable:
            self.potential.fit_to_data(train, val)
        if self.potential.trainable:
            self._error_scale, self._energy_scale = self._loss_scales(train)
            return
        ignored = {k: self.hparams[k] for k in ("lr", "weight_decay", "scheduler", "warmup_steps")}
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

    def _fit_data(self, datamodule) -> tuple:
        """(train, val) for ``fit_to_data``: datasets of one molecule, or lists of them for a
        ``multi_molecule`` model given several (any other model refuses several)."""
        train, val = datamodule.subsets("train"), datamodule.subsets("val")
        if len(train) == 1:
            return train[0], val[0]
        if not self.potential.multi_molecule:
            raise DataError(
                f"{type(self.potential).__name__} describes one molecule, and the data holds {len(train)} "
                f"({', '.join(datamodule.molecule_names)}); train one model per molecule, or use GeoPaTra"
            )
        return train, val

    def training_step(self, batch, batch_idx: int):
        if not self.potential.trainable:
            # The solve in on_fit_start is this model's one optimisation step; stepping the (empty)
            # optimiser records it, so checkpointing and resuming see a finished epoch.
            self.optimizers().step()
            return None
        energy, forces = self(batch, training=True)
        counts = atoms_per_molecule(batch.batch, batch.num_graphs)
        energy_error = energy - batch.energy.to(energy.dtype)
        if self.hparams.energy_loss == "per_atom":
            energy_error = energy_error / counts.to(energy.dtype)
        loss_e = self._loss(energy_error, self._energy_scale)
        loss_f = self._loss(forces - batch.forces.to(forces.dtype))
        loss = self.hparams.energy_weight * loss_e + self.hparams.force_weight * loss_f
        self._errors["train"].update(energy, batch.energy, counts, forces, batch.forces)
        size = batch.num_graphs
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/energy_loss", loss_e, batch_size=size)
        self.log("train/force_loss", loss_f, batch_size=size)
        return loss

    def _fine_tune_start(self, train, val) -> None:
        """Weights from ``init_from``; energy shifts refitted on the new data, force scale kept."""
        from geopatra.checkpoint import load_weights_for_fine_tuning

        elements = sorted({int(z) for dataset in as_list(train) for z in dataset.z})
        load_weights_for_fine_tuning(self.potential, self.hparams.init_from, elements)
        keep = {name: buffer.clone() for name, buffer in self.potential.named_buffers()
                if name in ("energy_scale", "seen_elements")}
        self.potential.fit_to_data(train, val)
        with torch.no_grad():
            buffers = dict(self.potential.named_buffers())
            if "energy_scale" in keep:
                buffers["energy_scale"].copy_(keep["energy_scale"])
            if "seen_elements" in keep:
                buffers["seen_elements"] |= keep["seen_elements"]
        logger.info("fine-tuning from %s (energy shifts refitted on the new data)", self.hparams.init_from)

    def _loss_scales(self, train) -> tuple[float, float]:
        """(force, energy) loss normalisers of a training set (1.0 each without normalisation)."""
        if not self.hparams.normalize_loss:
            return 1.0, 1.0
        train = as_list(train)
        force = force_rms([d.F for d in train])
        force = force if force > 0 else 1.0
        if self.hparams.energy_error_scale == "force_rms":
            return force, force
        per_atom = self.hparams.energy_loss == "per_atom"
        energies = [np.asarray(d.E, dtype=np.float64) / (len(d.z) if per_atom else 1) for d in train]
        # each molecule about its own mean: the offsets between molecules are the shifts' business
        energy = float(np.std(np.concatenate([e - e.mean() for e in energies])))
        return force, energy if energy > 0 else force

    # --- the recipe: learning rate, gradient diagnostics ----------------------------------------------
    def budget_progress(self) -> float:
        """Fraction in [0, 1] of the run's budget used: the larger of steps / ``max_steps`` and
        elapsed / ``max_time`` (whichever is set), else steps / (``max_epochs`` x batches per epoch)."""
        trainer = self.trainer
        fractions = []
        if trainer.max_steps is not None and trainer.max_steps > 0:
            fractions.append(trainer.global_step / trainer.max_steps)
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is not None:
            elapsed = timer.time_elapsed()
            fractions.append(elapsed / max(elapsed + remaining, 1e-9))
        if not fractions and trainer.max_epochs is not None and trainer.max_epochs > 0:
            per_epoch = trainer.num_training_batches
            if isinstance(per_epoch, (int, float)) and math.isfinite(per_epoch) and per_epoch > 0:
                fractions.append(trainer.global_step / (trainer.max_epochs * per_epoch))
        return min(1.0, max(fractions, default=0.0))

    def learning_rate(self, step: int, progress: float) -> float:
        """Learning rate of optimiser step ``step`` (0-based) at budget fraction ``progress``."""
        hp = self.hparams
        warmup = min(1.0, (step + 1) / hp.warmup_steps) if hp.warmup_steps > 0 else 1.0
        if hp.scheduler == "constant":
            return hp.lr * warmup
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return warmup * (hp.min_lr + (hp.lr - hp.min_lr) * cosine)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if not self.potential.trainable or self.hparams.scheduler == "plateau":
            return
        lr = self.learning_rate(self.trainer.global_step, self.budget_progress())
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = lr

    def on_before_optimizer_step(self, optimizer) -> None:
        """Log the learning rate and the gradient norm before clipping; count clipped steps."""
        grads = [p.grad for p in self.potential.parameters() if p.grad is not None]
        if not grads:
            return
        norm = float(torch.nn.utils.get_total_norm(grads))
        clip = self.trainer.gradient_clip_val
        self._steps_since_val += 1
        self._clipped_since_val += int(clip is not None and clip > 0 and norm > clip)
        self.log("train/grad_norm", norm)
        self.log("train/lr", optimizer.param_groups[0]["lr"])

    def configure_optimizers(self):
        if not self.potential.trainable:
            return None
        optimizer = torch.optim.AdamW(
            self.potential.parameters(),
            lr=self.hparams.lr,
            weight_decay=self.hparams.weight_decay,
            amsgrad=self.hparams.amsgrad,
            fused=True if self._fused_optimizer_ok() else None,
        )
        if self.hparams.scheduler != "plateau":
            return optimizer
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

    def _fused_optimizer_ok(self) -> bool:
        """Whether AdamW may use its fused kernel (one call for all tensors, not torch's per-tensor loop on a
        CPU): on a CPU or CUDA device, and not under mixed precision, whose gradient scaling Lightning
        refuses to combine with a fused optimiser and clipping."""
        device = next(self.potential.parameters()).device
        precision = str(self._trainer.precision) if self._trainer is not None else "32-true"
        return device.type in ("cpu", "cuda") and "mixed" not in precision

    # --- evaluation ---------------------------------------------------------------------------------
    def _evaluate(self, batch, stage: str) -> None:
        if stage == "val" and self._is_first_batch_of_validation:
            self._is_first_batch_of_validation = False
            for name, value in self.potential.validation_diagnostics(batch.pos, batch.z, batch.batch).items():
                self.log(f"val/{name}", value, batch_size=batch.num_graphs)
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
                    "molecule": batch.molecule.cpu(),
                }
            )

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _sum_over_processes(self, totals: torch.Tensor) -> torch.Tensor:
        """Sum ``totals`` over the processes of a distributed run (unchanged in one process)."""
        return self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum")

    def _log_epoch(self, stage: str) -> dict[str, float]:
        metrics = self._errors[stage].compute(reduce=self._sum_over_processes)
        self._errors[stage].reset()
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name.startswith("force_mae"))
        return metrics

    def on_validation_epoch_start(self) -> None:
        self._errors["val"].reset()
        self._is_first_batch_of_validation = True

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if self.trainer.sanity_checking or not self.potential.trainable:
            return
        if self.trainer.state.fn == "fit":
            self.log("val/elapsed_s", time.perf_counter() - self._fit_start)  # wall time since fit start
        # training-set errors of the batches since the previous validation (weights as trained, no EMA)
        train = self._errors["train"].compute(reduce=self._sum_over_processes)
        self._errors["train"].reset()
        for name in ("force_mae_kcal_mol_A", "energy_mae_kcal_mol"):
            if name in train:
                self.log(f"train/{name}", train[name])
        if self._steps_since_val:
            self.log("train/clipped_fraction", self._clipped_since_val / self._steps_since_val)
        self._steps_since_val, self._clipped_since_val = 0, 0

    def on_test_start(self) -> None:
        self._guard_against_leakage()
        self._errors["test"].reset()
        self._test_predictions = []

    def on_test_epoch_end(self) -> None:
        metrics = self._log_epoch("test")
        from geopatra.reports import per_molecule_metrics, write_test_report

        predictions = self._gather(self._test_predictions)  # every process's frames, for the report
        names = self.trainer.datamodule.molecule_names if self.trainer.datamodule is not None else []
        per_molecule = per_molecule_metrics(predictions, names) if len(names) > 1 else {}
        for name, values in per_molecule.items():
            for metric in ("energy_mae_kcal_mol", "force_mae_kcal_mol_A"):
                self.log(f"test/{name}/{metric}", values[metric])
        if self.trainer.is_global_zero:  # one report per run
            write_test_report(self.trainer.default_root_dir, metrics, predictions, self, per_molecule)

    def _gather(self, items: list) -> list:
        """``items`` of every process, rank by rank (``items`` itself in one process)."""
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return items
        gathered: list[list] = [[] for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather_object(gathered, items)
        return [item for part in gathered for item in part]

    def _guard_against_leakage(self) -> None:
        """Refuse to test on frames the checkpoint was trained on (see :meth:`RunRecord.check_not_trained_on`)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.run_record is not None and datamodule is not None:
            self.run_record.check_not_trained_on(datamodule.datasets, datamodule.subsets("test"))

    # --- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The run record (the random state is :class:`~geopatra.callbacks.RandomState`'s)."""
        checkpoint[CHECKPOINT_KEY] = self.run_record.to_dict() if self.run_record is not None else {}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = {k: v for k, v in checkpoint.get(CHECKPOINT_KEY, {}).items() if k != "rng"}  # rng: before RandomState
        self.run_record = RunRecord.from_dict(record) if record else None

def as_list(data) -> list:
    """A dataset, or a list of datasets (one per molecule), as a list."""
    return list(data) if isinstance(data, (list, tuple)) else [data]
