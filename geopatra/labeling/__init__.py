"""``geopatra label`` (also ``python -m geopatra.labeling``): the driver (:mod:`.driver`: Langevin MD
sampling and labelling), start geometries, reference calculators, the resumable checkpoint format
(:mod:`.resume`) and trajectory sanity reports."""

from geopatra.labeling.calculators import reference_calculator
from geopatra.labeling.report import TrajectoryReport, trajectory_report
from geopatra.labeling.resume import write_npz_atomic
from geopatra.labeling.structures import atoms_from_file, atoms_from_smiles

__all__ = [
    "TrajectoryReport",
    "atoms_from_file",
    "atoms_from_smiles",
    "reference_calculator",
    "trajectory_report",
    "write_npz_atomic",
]
