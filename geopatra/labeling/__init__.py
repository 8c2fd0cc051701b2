"""Building blocks of ``geopatra label``: start geometries, reference calculators, reproducible npz
writing with checkpoints, and trajectory sanity reports. The driver is :mod:`geopatra.label`."""

from geopatra.labeling.calculators import reference_calculator
from geopatra.labeling.npzio import write_npz_atomic
from geopatra.labeling.report import TrajectoryReport, trajectory_report
from geopatra.labeling.structures import atoms_from_file, atoms_from_smiles

__all__ = [
    "TrajectoryReport",
    "atoms_from_file",
    "atoms_from_smiles",
    "reference_calculator",
    "trajectory_report",
    "write_npz_atomic",
]
