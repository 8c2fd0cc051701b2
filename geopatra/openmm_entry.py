"""The ``openmmml.potentials`` entry point of geopatra: a factory that imports nothing heavy.

openmm-ml loads every registered entry point while ``openmmml.mlpotential`` is still being imported,
so the module it names must not import openmmml itself; the implementation
(:mod:`geopatra.openmm_potential`) is imported when a potential is created.
"""

from __future__ import annotations


class GeoPatraPotentialImplFactory:
    """Makes the implementation of ``MLPotential('geopatra', checkpoint=..., device=..., dtype=...)``."""

    def createImpl(self, name: str, **args):
        from geopatra.openmm_potential import create_impl

        return create_impl(**args)
