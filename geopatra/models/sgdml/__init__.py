"""The sGDML kernel force field (Chmiela et al.): descriptor, symmetrised kernel, model."""

from geopatra.models.sgdml.kernel import SGDMLKernel
from geopatra.models.sgdml.model import SGDML
from geopatra.models.sgdml.symmetries import find_permutations

__all__ = ["SGDML", "SGDMLKernel", "find_permutations"]
