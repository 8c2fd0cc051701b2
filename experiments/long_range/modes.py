"""The two sizes of the study: ``fast`` (CPU, under an hour on 2 cores, labelling included) and
``full`` (>= 3,000 frames per molecule; training meant for a GPU). Model sizes, epochs and learning
rates live in the YAML configs next to this file (``geopatra_<mode>.yaml``, ``sgdml_<mode>.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from experiments.long_range.labelling import LabelSettings
from geopatra.labeling.driver import MDSettings

HERE = Path(__file__).resolve().parent

#: GeoPaTra variants: name -> attention cutoff [Å] (None: global attention, no cutoff).
VARIANTS: dict[str, float | None] = {"global": None, "cutoff8": 8.0, "cutoff5": 5.0, "cutoff3": 3.0}


@dataclass(frozen=True)
class Mode:
    """What differs between the fast and the full study besides the configs.

    Attributes:
        name: "fast" or "full".
        label: MD sampling per molecule.
        n_train, n_val: frames of the split shared by every model of a molecule (test: the rest).
        sgdml_train: sGDML training frames, a seeded random subset of the shared training frames
            (same validation and test frames).
        coupling_frames: test frames on which the donor–acceptor force coupling dF_acceptor/dR_donor
            is computed (GFN2-xTB by central differences, models by autograd).
        attention_frames: test frames averaged in the attention figure.
        replicate_seeds: further training seeds of every GeoPaTra variant (the main runs use seed 0),
            to tell differences between variants from training noise.
    """

    name: str
    label: LabelSettings
    n_train: int
    n_val: int
    sgdml_train: int
    coupling_frames: int
    attention_frames: int
    replicate_seeds: tuple[int, ...] = (1,)

    def config(self, model: str) -> Path:
        """The YAML config of ``model`` ("geopatra" or "sgdml") in this mode."""
        return HERE / f"{model}_{self.name}.yaml"


MODES = {
    "fast": Mode(
        name="fast",
        label=LabelSettings(trajectories=2, md=MDSettings(frames=200, stride=10, equilibration_steps=400)),
        n_train=200,
        n_val=50,
        sgdml_train=100,
        coupling_frames=3,
        attention_frames=50,
    ),
    "full": Mode(
        name="full",
        label=LabelSettings(trajectories=8, md=MDSettings(frames=400, stride=10, equilibration_steps=1000)),
        n_train=1000,
        n_val=200,
        sgdml_train=500,
        coupling_frames=10,
        attention_frames=200,
    ),
}
