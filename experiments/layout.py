"""Where the experiments live, and what the models are called in every table."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
DEFAULT_WORK = EXPERIMENTS / "work" / "bench"
DEFAULT_RESULTS = EXPERIMENTS / "results"
REFERENCE_DIR = EXPERIMENTS / "sgdml_reference"
#: The MACE side, run as ``<venv-mace>/bin/python -m experiments.mace_side`` from the repository root.
MACE_SIDE = "experiments.mace_side"

#: Model names as they appear in every table.
GEOPATRA_SGDML, REFERENCE_SGDML, GEOPATRA_NN, MACE = "geopatra-sGDML", "sgdml 1.0.3", "GeoPaTra", "MACE"
MODELS = (GEOPATRA_SGDML, REFERENCE_SGDML, GEOPATRA_NN, MACE)
#: Command-line prefix of a potential's constructor argument in a geopatra config (``+ "num_rbf"``).
POTENTIAL_ARG = "--model.init_args.potential.init_args."


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
