"""Stage ``train``: the four GeoPaTra variants and sGDML for each molecule, through ``geopatra fit``,
and the variants again with the mode's replicate seeds (``runs/<molecule>/<variant>_seed<s>``).

Every run is a subprocess ``python -m geopatra.cli fit --config <mode config> ...`` in its own run
directory ``<work>/runs/<molecule>/<model>``, on the molecule's shared split file. A run with a
``done.json`` is skipped; one with ``checkpoints/last.ckpt`` but no ``done.json`` (interrupted) is
resumed with ``--ckpt_path last``. Runs go ``workers`` at a time, each with one CPU thread.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from experiments.long_range.jobs import run_parallel
from experiments.long_range.modes import VARIANTS, Mode
from experiments.long_range.prepare import paths

logger = logging.getLogger(__name__)

MODELS = [*VARIANTS, "sgdml"]


def replicate(variant: str, seed: int) -> str:
    """Run name of a GeoPaTra variant trained with another seed, e.g. ``global_seed1``."""
    return f"{variant}_seed{seed}"


def run_names(mode: Mode) -> list[str]:
    """Every run of a molecule: the four variants and sGDML (seed 0), then the seed replicates."""
    return [*MODELS, *(replicate(v, seed) for seed in mode.replicate_seeds for v in VARIANTS)]


def run_dir(work: Path, molecule: str, model: str) -> Path:
    return work / "runs" / molecule / model


def fit_command(work: Path, molecule: str, model: str, mode: Mode, device: str) -> list[str]:
    """The ``geopatra fit`` command line of one run (and a timing wrapper writing ``done.json``)."""
    files = paths(work, molecule)
    directory = run_dir(work, molecule, model)
    kind = "sgdml" if model == "sgdml" else "geopatra"
    variant, _, seed = model.partition("_seed")
    args = [
        "fit",
        "--config",
        str(mode.config(kind)),
        "--data.path",
        str(files["data"]),
        "--data.split_file",
        str(files["split_sgdml" if kind == "sgdml" else "split"]),
        "--trainer.default_root_dir",
        str(directory),
        "--trainer.accelerator",
        "gpu" if device.startswith("cuda") else "cpu",
    ]
    if kind == "geopatra":
        cutoff = VARIANTS[variant]  # None: the config's global model as it is
        if cutoff is not None:
            args += ["--model.init_args.potential.init_args.cutoff", str(cutoff)]
        if seed:
            args += ["--seed_everything", seed]
    elif device.startswith("cuda"):
        args += ["--model.init_args.potential.init_args.device", device]
    if (directory / "checkpoints" / "last.ckpt").exists():
        args += ["--ckpt_path", "last"]
    return [sys.executable, "-c", _WRAPPER, str(directory / "done.json"), *args]


# Runs geopatra fit and records its wall time; done.json marks the run as finished.
_WRAPPER = """
import json, sys, time
from geopatra.cli import main
done, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
status = main(argv)
with open(done, "w") as handle:
    json.dump({"seconds": time.perf_counter() - start, "argv": argv}, handle, indent=1)
sys.exit(status)
"""


def train_all(molecules: list[str], work: Path, mode: Mode, device: str, workers: int, runs: list[str]) -> None:
    """Fit every (molecule, run) of ``runs`` (names from ``run_names``) that has no ``done.json`` yet."""
    commands = []
    for molecule in molecules:
        for model in runs:
            directory = run_dir(work, molecule, model)
            if (directory / "done.json").exists():
                logger.info("train: %s done, skipped", directory)
                continue
            directory.mkdir(parents=True, exist_ok=True)
            commands.append((fit_command(work, molecule, model, mode, device), directory / "fit.log"))
    if not commands:
        return
    # sGDML first: its solve is the longest single job on a CPU
    commands.sort(key=lambda item: "sgdml" not in str(item[1]))
    logger.info("train: %d runs on %d workers (%s)", len(commands), workers, device)
    start = time.perf_counter()
    run_parallel(commands, workers)
    logger.info("train: done in %.0f s", time.perf_counter() - start)


def run_seconds(work: Path, molecule: str, model: str) -> float:
    """Wall time [s] of a finished run (of its last invocation when it was resumed)."""
    return float(json.loads((run_dir(work, molecule, model) / "done.json").read_text())["seconds"])
