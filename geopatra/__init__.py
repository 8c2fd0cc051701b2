"""geopatra: machine-learned force fields for whole molecules (GeoPaTra transformer and sGDML)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["GeoPatraCalculator", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import geopatra` stays light; the calculator pulls in torch and ASE.
    if name == "GeoPatraCalculator":
        from geopatra.calculator import GeoPatraCalculator

        return GeoPatraCalculator
    raise AttributeError(f"module 'geopatra' has no attribute {name!r}")
