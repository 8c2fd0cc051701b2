"""What the training loop, the calculator and the benchmarks need of a model.

A potential is an ``nn.Module`` mapping a batch of molecules to one energy per molecule:

    forward(pos [n_atoms, 3] Å, z [n_atoms], batch [n_atoms], num_graphs) -> energy [num_graphs] kcal/mol

and ``fit_to_data(train, val)``, called once by the training loop before optimisation starts:
neural models fit their per-element energy shift and force scale there, kernel models solve for
their coefficients there (``trainable = False`` tells the loop there is nothing to optimise).
Everything needed to rebuild the model lives in its constructor arguments (recorded automatically
in ``init_args``) plus its ``state_dict``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor

from geopatra.data.dataset import MolecularDataset


class Potential(torch.nn.Module):
    """Base class of geopatra models (see module docstring)."""

    #: False for models with nothing to optimise by gradient descent (kernel models).
    trainable: ClassVar[bool] = True
    #: Short name stored in checkpoints ("geopatra", "sgdml").
    kind: ClassVar[str] = "potential"
    #: Whether one model can be fitted to several molecules (``fit_to_data`` then gets a list).
    multi_molecule: ClassVar[bool] = False
    #: Whether the energy is a sum of atomic energies (:meth:`per_atom_energy`).
    has_per_atom_energy: ClassVar[bool] = False

    init_args: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap each subclass ``__init__`` so the arguments it was built with are kept in ``init_args``.

        The outermost constructor wins, so a subclass of a subclass records its own arguments.
        """
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__dict__["__init__"]
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop(next(iter(signature.parameters)))  # self
            self.__dict__["init_args"] = arguments

        cls.__init__ = recording_init

    def forward(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        raise NotImplementedError

    def batch_layout(self, batch: Tensor, num_graphs: int) -> dict[str, Any] | None:
        """Keyword arguments of :meth:`forward` that depend only on which atoms form which molecule
        (never on positions), computed before a compiled forward so that the compiled graph has no
        data-dependent shapes; None (the default) if ``forward`` cannot be compiled that way."""
        return None

    def per_atom_energy(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Energy of each atom [n_atoms] kcal/mol, summing to :meth:`forward` per molecule; only for
        models with ``has_per_atom_energy`` (a kernel model's energy has no atomic decomposition)."""
        raise NotImplementedError(f"{type(self).__name__} has no per-atom energies")

    def fit_to_data(self, train: MolecularDataset, val: MolecularDataset | None = None) -> None:
        """Fit whatever the model takes from the data before (or instead of) gradient training
        (``train`` is a list of datasets, one per molecule, for ``multi_molecule`` models)."""

    def validation_diagnostics(self, pos: Tensor, z: Tensor, batch: Tensor) -> dict[str, float]:
        """Scalars about the model's internals on one validation batch (positions [n_atoms, 3] Å,
        atomic numbers and molecule index [n_atoms]), logged as ``val/<name>``; none by default."""
        return {}

    def check_atoms(self, z: Tensor) -> None:
        """Raise a typed error if the model cannot describe a molecule with atomic numbers ``z``."""

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the model computes in: its parameters' (float64 for parameter-free kernel models)."""
        parameter = next(self.parameters(), None)
        return parameter.dtype if parameter is not None else torch.float64

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit_to_data` has run (kernel models override this with a real check)."""
        return False
