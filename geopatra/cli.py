"""The ``geopatra`` command: ``fit``/``validate``/``test`` through LightningCLI, plus ``md`` and ``label``.

    geopatra fit --config configs/geopatra.yaml [--data.n_train 500] [--trainer.default_root_dir runs/x]
    geopatra test --config configs/geopatra.yaml --ckpt_path runs/x/checkpoints/last.ckpt
"""

from __future__ import annotations

import logging
import sys

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from geopatra.callbacks import RunCheckpoint
from geopatra.data.datamodule import MolecularDataModule
from geopatra.task import ForceFieldTask

DEFAULT_RUN_DIR = "runs/default"


class GeopatraCLI(LightningCLI):
    """LightningCLI with geopatra's run-directory layout: ``<default_root_dir>/checkpoints``
    (``last.ckpt`` + best), ``split.npz``, ``logs/version_N`` (metrics.csv, config.yaml),
    and ``metrics.json`` + ``parity.png`` after ``test``."""

    def _instantiate_trainer(self, config, callbacks):
        run_dir = config.get("default_root_dir") or DEFAULT_RUN_DIR
        config["default_root_dir"] = run_dir
        if config.get("logger") in (None, True):
            config["logger"] = CSVLogger(save_dir=run_dir, name="logs")
        if not any(isinstance(c, RunCheckpoint) for c in callbacks):
            callbacks = [*callbacks, RunCheckpoint(run_dir)]
        return super()._instantiate_trainer(config, callbacks)


def cli_kwargs() -> dict:
    """The LightningCLI settings of the ``geopatra`` command (shared with the config tests)."""
    return {
        "model_class": ForceFieldTask,
        "datamodule_class": MolecularDataModule,
        "subclass_mode_model": True,
        "seed_everything_default": 0,
        "save_config_kwargs": {"overwrite": True},
        "trainer_defaults": {"inference_mode": False, "default_root_dir": DEFAULT_RUN_DIR},
    }


def run_lightning(args: list[str] | None = None) -> GeopatraCLI:
    return GeopatraCLI(**cli_kwargs(), args=args)


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv and argv[0] == "label":
        from geopatra.label import main as label_main

        return label_main(argv[1:])
    if argv and argv[0] == "md":
        from geopatra.md import main as md_main

        return md_main(argv[1:])
    if argv and argv[0] == "compare":
        from geopatra.reports import compare_runs

        print(compare_runs(argv[1:]))
        return 0
    if argv and argv[0] == "summary":
        from geopatra.data import read_dataset

        print(read_dataset(argv[1] if len(argv) > 1 else "bundled").summary())
        return 0
    run_lightning(argv if explicit else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
