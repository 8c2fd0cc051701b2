"""GeoPaTra: the global geometric-attention E(3)-equivariant transformer (see :mod:`.model`)."""

from geopatra.models.transformer.model import GeoPaTra

__all__ = ["GeoPaTra"]
