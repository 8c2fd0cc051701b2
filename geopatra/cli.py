"""The ``geopatra`` command: ``fit``/``validate``/``test`` through LightningCLI, plus ``md``, ``label``,
``summary`` and ``compare``.

    geopatra fit --config configs/geopatra.yaml [--data.n_train 500] [--trainer.default_root_dir runs/x]
    geopatra test --config configs/geopatra.yaml --ckpt_path runs/x/checkpoints/last.ckpt

A geopatra error (bad data, units, checkpoint, solver failure) prints as one line ``error: ...`` on
stderr with exit status 2; ``--traceback`` (anywhere on the line) or ``GEOPATRA_TRACEBACK=1`` shows
the full traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from geopatra.callbacks import RandomState, RunCheckpoint
from geopatra.data.datamodule import MolecularDataModule
from geopatra.errors import GeopatraError
from geopatra.strategy import SolvedModelDDPStrategy
from geopatra.task import ForceFieldTask

DEFAULT_RUN_DIR = "runs/default"
#: Every subcommand and what it does (``geopatra --help``).
SUBCOMMANDS = {
    "fit": "train a model (LightningCLI: --config, --data.*, --model.*, --trainer.*)",
    "validate": "validation errors of a checkpoint (--ckpt_path)",
    "test": "test errors, metrics.json and parity.png of a checkpoint (--ckpt_path)",
    "md": "molecular dynamics from a checkpoint, with an energy-conservation and health report",
    "label": "make a dataset: MD of a molecule labelled with GFN2-xTB",
    "summary": "what a dataset holds (frames, atoms, units, energy, force and distance ranges)",
    "compare": "test metrics of several run directories side by side",
}
#: Exit status of a geopatra error.
ERROR_STATUS = 2


class GeopatraCLI(LightningCLI):
    """LightningCLI with geopatra's run-directory layout: ``<default_root_dir>/checkpoints``
    (``last.ckpt`` + best), ``split.npz``, ``logs/version_N`` (metrics.csv, config.yaml),
    and ``metrics.json`` + ``parity.png`` after ``test``. ``predict`` is not offered (``geopatra md``
    and the ASE calculator predict from a checkpoint)."""

    def after_fit(self) -> None:
        """Leave ``learning_curve.png`` (train/val force MAE against step and wall time) in the run dir."""
        if self.trainer.is_global_zero:
            from geopatra.reports import plot_learning_curve

            plot_learning_curve(self.trainer.default_root_dir)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def _instantiate_trainer(self, config, callbacks):
        run_dir = config.get("default_root_dir") or DEFAULT_RUN_DIR
        config["default_root_dir"] = run_dir
        if config.get("logger") in (None, True):
            config["logger"] = CSVLogger(save_dir=run_dir, name="logs")
        if not any(isinstance(c, RunCheckpoint) for c in callbacks):
            callbacks = [*callbacks, RunCheckpoint(run_dir)]
        if not any(isinstance(c, RandomState) for c in callbacks):
            callbacks = [*callbacks, RandomState()]
        potential = getattr(self.model, "potential", None)
        if config.get("strategy") == "ddp" and potential is not None and not potential.trainable:
            config["strategy"] = SolvedModelDDPStrategy()  # processes share the solve, not gradients
        trainer = super()._instantiate_trainer(config, callbacks)
        if self.subcommand == "fit":  # refuse before DDP starts processes, which cannot exit cleanly
            self.model.refuse_unshared_solve(trainer)
        return trainer


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


def usage() -> str:
    """``geopatra --help``: every subcommand with one line."""
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: geopatra <subcommand> [options]   (geopatra <subcommand> --help for its options)", ""]
    lines += [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "errors print as one line; --traceback or GEOPATRA_TRACEBACK=1 shows the traceback"]
    return "\n".join(lines)


def _summary(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="geopatra summary", description=SUBCOMMANDS["summary"])
    parser.add_argument("path", nargs="*", default=["bundled"],
                        help="npz/extxyz files, MD22 names or 'bundled' (every molecule of each is shown)")
    from geopatra.data.io import read_molecules

    molecules = [m for path in parser.parse_args(argv).path for m in read_molecules(path)]  # units may differ
    print("\n\n".join(m.summary() for m in molecules))
    return 0


def _compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="geopatra compare", description=SUBCOMMANDS["compare"])
    parser.add_argument("run_dirs", nargs="+", help="run directories holding metrics.json (after `geopatra test`)")
    from geopatra.reports import compare_runs

    print(compare_runs(parser.parse_args(argv).run_dirs))
    return 0


def _dispatch(argv: list[str], explicit: bool) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "label":
        from geopatra.labeling.driver import main as label_main

        return label_main(rest)
    if name == "md":
        from geopatra.md import main as md_main

        return md_main(rest)
    if name == "summary":
        return _summary(rest)
    if name == "compare":
        return _compare(rest)
    if name not in SUBCOMMANDS and not name.startswith("-"):
        print(f"error: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return ERROR_STATUS
    run_lightning(argv if explicit else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    explicit = argv is not None
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in argv or os.environ.get("GEOPATRA_TRACEBACK", "") not in ("", "0")
    if "--traceback" in argv:
        argv.remove("--traceback")
        if not explicit:
            sys.argv = [sys.argv[0], *argv]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _dispatch(argv, explicit)
    except GeopatraError as err:
        if show_traceback:
            raise
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return ERROR_STATUS


if __name__ == "__main__":
    sys.exit(main())
