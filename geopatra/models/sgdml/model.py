"""The sGDML model (Chmiela et al. 2018, 2023) as a geopatra ``Potential``, float64.

Training (``fit_to_data`` / ``fit``): detect the permutational symmetries, then for each σ of the
grid solve ``(K_σ + λI) α = F_train`` (exact Cholesky or matrix-free PCG) and score the force MAE
on the validation set; keep the best σ (scored on a subset of ``sigma_search_size`` training frames
when there are more, then solved once on all). The integration constant is ``c = mean(E_train - Ê_train)``
(the reference's least-squares constant). Descriptors, pair gradients and descriptor permutations
are computed once and shared across the σ grid (:meth:`SGDMLKernel.with_sigma`).

Prediction: the energy is the kernel-gradient contraction with α (see
:mod:`geopatra.models.sgdml.kernel`), forces are ``-dE/dR`` by autograd; the analytic force
predictor ``F = K α`` (:meth:`SGDML.predict_forces_analytic`) is kept for checks.

The learned state (training geometries, α, permutations, z, σ, λ, c, train indices, dataset
fingerprint) lives in buffers, so a ``state_dict`` rebuilds a fitted model in a fresh instance.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from geopatra.data.dataset import MolecularDataset
from geopatra.errors import DataError, IncompatibleMoleculeError
from geopatra.models.forces import predict_frames
from geopatra.models.potential import Potential
from geopatra.models.sgdml.descriptor import descriptor, pair_gradients, vjp
from geopatra.models.sgdml.distributed import is_distributed
from geopatra.models.sgdml.kernel import DescriptorWeights, SGDMLKernel
from geopatra.models.sgdml.pricing import ProductPrice, price_group
from geopatra.models.sgdml.solve import SolveSettings
from geopatra.models.sgdml.symmetries import find_permutations
from geopatra.solvers.result import SolveResult

logger = logging.getLogger(__name__)

_BUFFERS = ("R_train", "alphas", "perms", "z", "sigma", "lam", "c", "train_indices", "fingerprint", "n_perms")


class SGDML(Potential):
    """Symmetric gradient-domain machine learning force field of one molecule.

    Args:
        sigmas: Matérn length scales to try (1/Å, descriptor units); the best on validation wins.
        lam: ridge regulariser λ.
        use_symmetries: detect permutational symmetries (else identity only).
        max_symmetries: cap on the size of the detected group.
        max_product_seconds: with the iterative solver, keep the largest subgroup whose kernel product
            (one CG iteration) on all training geometries is estimated to take at most this long [s]
            on this machine (:mod:`geopatra.models.sgdml.pricing`; the estimates are logged whether or
            not a budget is set). ``None``: no time cap. The exact solver ignores it (its cost is the
            factorisation, nearly independent of the group).
        permutations: explicit permutations [S][N] (overrides detection; identity added).
        solver: ``"exact"`` (Cholesky), ``"iterative"`` (PCG + Nyström) or ``"auto"`` (exact if it
            fits ``memory_budget_gb``).
        memory_budget_gb: memory the exact solver may use [GiB].
        solver_tol: relative residual tolerance of the iterative solver.
        solver_k: Nyström rank of the iterative solver's preconditioner (inducing columns; rounded
            up to whole training geometries of 3N columns). ``None``: a quarter of the unknowns,
            capped so that the preconditioner (about ``3·k·n`` float64) fits ``memory_budget_gb``.
            The rank doubles when CG stagnates, up to the same memory cap.
        solver_selection: inducing-column selection, ``"pivoted_cholesky"`` (default; best in
            ``experiments/results/preconditioners.md``), ``"leverage"`` or ``"random"``.
        solver_max_iter: CG iteration budget per σ (``None``: ``min(10 n, 100000)``).
        solver_checkpoint: PCG state file (``.pt``); one file per σ is written next to it
            (``<stem>.sigma<σ>.m<M><suffix>``) so that an interrupted solve resumes. ``None``: none.
        device: compute device for training and prediction (default: where the module is, e.g. the
            device Lightning's trainer put it on: ``--trainer.accelerator``).
        max_symmetry_geometries: training geometries matched for symmetry detection.
        predict_chunk: frames per chunk in :meth:`predict`.
        sigma_search_size: with more training frames than this, σ is scored on this many evenly
            spaced ones and only the chosen σ is solved on all (``None``: the whole grid on all).

    The solver arguments travel together as ``solve_settings``
    (:class:`~geopatra.models.sgdml.solve.SolveSettings`). Fitted in one of several processes of a
    ``torch.distributed`` group, the iterative solve is shared by them
    (:mod:`geopatra.models.sgdml.distributed`).
    """

    trainable = False
    kind = "sgdml"

    def __init__(
        self,
        sigmas: list[float] | None = None,
        lam: float = 1e-10,
        use_symmetries: bool = True,
        max_symmetries: int = 512,
        max_product_seconds: float | None = None,
        permutations: list[list[int]] | None = None,
        solver: Literal["auto", "exact", "iterative"] = "auto",
        memory_budget_gb: float = 8.0,
        solver_tol: float = 1e-8,
        solver_k: int | None = None,
        solver_selection: Literal["pivoted_cholesky", "leverage", "random"] = "pivoted_cholesky",
        solver_max_iter: int | None = None,
        solver_checkpoint: str | None = None,
        device: str | None = None,
        max_symmetry_geometries: int = 100,
        predict_chunk: int = 64,
        sigma_search_size: int | None = 100,
    ) -> None:
        super().__init__()
        self.solve_settings = SolveSettings(
            solver=solver, memory_budget_gb=memory_budget_gb, tol=solver_tol, k=solver_k, selection=solver_selection,
            max_iter=solver_max_iter, checkpoint=solver_checkpoint,
        )
        self.sigmas = list(sigmas) if sigmas is not None else [10.0, 20.0, 40.0, 80.0, 160.0]
        self.lam_init = float(lam)
        self.use_symmetries = use_symmetries
        self.max_symmetries = max_symmetries
        if max_product_seconds is not None and not max_product_seconds > 0:
            raise ValueError(f"SGDML: max_product_seconds must be > 0 or None; got {max_product_seconds}")
        self.max_product_seconds = max_product_seconds
        self.permutations = permutations
        self.device_name = device
        self.max_symmetry_geometries = max_symmetry_geometries
        self.predict_chunk = predict_chunk
        if sigma_search_size is not None and sigma_search_size < 2:
            raise ValueError(f"SGDML: sigma_search_size must be >= 2 or None; got {sigma_search_size}")
        self.sigma_search_size = sigma_search_size
        f64 = torch.float64
        self.register_buffer("R_train", torch.zeros(0, 0, 3, dtype=f64))
        self.register_buffer("alphas", torch.zeros(0, dtype=f64))
        self.register_buffer("perms", torch.zeros(0, 0, dtype=torch.long))
        self.register_buffer("z", torch.zeros(0, dtype=torch.long))
        self.register_buffer("sigma", torch.zeros((), dtype=f64))
        self.register_buffer("lam", torch.tensor(float(lam), dtype=f64))
        self.register_buffer("c", torch.zeros((), dtype=f64))
        self.register_buffer("train_indices", torch.zeros(0, dtype=torch.long))
        self.register_buffer("fingerprint", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("n_perms", torch.zeros((), dtype=torch.long))
        self.solve_result_: SolveResult | None = None
        self.sigma_scores_: dict[float, float] = {}
        self.product_prices_: list[ProductPrice] = []
        self._kernel_cache: tuple | None = None

    # -------------------------------------------------------------------------------- state
    @property
    def is_fitted(self) -> bool:
        return self.alphas.numel() > 0

    @property
    def compute_device(self) -> torch.device:
        return torch.device(self.device_name) if self.device_name else self.R_train.device

    @property
    def fingerprint_hex(self) -> str:
        return bytes(self.fingerprint.cpu().numpy().tolist()).decode() if self.fingerprint.numel() else ""

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in _BUFFERS:
            key = prefix + name
            if key in state_dict and getattr(self, name).shape != state_dict[key].shape:
                setattr(self, name, torch.empty_like(state_dict[key], device=getattr(self, name).device))
        self._kernel_cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _weights(self) -> tuple[SGDMLKernel, DescriptorWeights]:
        """Operator of the fitted model and its permuted weights (cached until buffers reload)."""
        key = (self.alphas.data_ptr(), self.alphas.numel(), str(self.compute_device), float(self.sigma))
        if self._kernel_cache is None or self._kernel_cache[0] != key:
            op = SGDMLKernel.of(self.R_train, self.perms, float(self.sigma), device=self.compute_device)
            self._kernel_cache = (key, op, op.weights(self.alphas.detach().to(op.device)))
        return self._kernel_cache[1:]

    # -------------------------------------------------------------------------------- checks
    def check_atoms(self, z: Tensor) -> None:
        """Raise :class:`IncompatibleMoleculeError` unless ``z`` [N] is the trained molecule."""
        if not self.is_fitted:
            raise IncompatibleMoleculeError("SGDML: the model is not fitted yet; call fit_to_data first")
        z = torch.as_tensor(z).reshape(-1).to("cpu", torch.long)
        mine = self.z.to("cpu")
        if z.shape != mine.shape or not torch.equal(z, mine):
            raise IncompatibleMoleculeError(
                f"SGDML: this model was trained on one molecule with atomic numbers "
                f"{mine.tolist()} ({mine.numel()} atoms, in this order); got {z.tolist()} "
                f"({z.numel()} atoms). sGDML models describe only the molecule they were trained on, "
                f"with the same atom order"
            )

    # -------------------------------------------------------------------------------- training
    def fit_to_data(self, train: MolecularDataset, val: MolecularDataset | None = None) -> None:
        """Train on ``train``, choosing σ on ``val`` (or taking the first σ if ``val`` is None)."""
        self.fit(
            train.R, train.z, train.E, train.F,
            R_val=None if val is None else val.R,
            E_val=None if val is None else val.E,
            F_val=None if val is None else val.F,
            train_indices=train.indices,
            fingerprint=train.fingerprint,
        )

    def fit(
        self,
        R: np.ndarray | Tensor,
        z: np.ndarray | Tensor,
        E: np.ndarray | Tensor | None,
        F: np.ndarray | Tensor,
        R_val: np.ndarray | Tensor | None = None,
        E_val: np.ndarray | Tensor | None = None,
        F_val: np.ndarray | Tensor | None = None,
        *,
        train_indices: np.ndarray | None = None,
        fingerprint: str = "",
    ) -> SGDML:
        """Fit on positions ``R`` [M, N, 3] Å, ``z`` [N], energies ``E`` [M] kcal/mol (None: c = 0)
        and forces ``F`` [M, N, 3] kcal/mol/Å; σ is chosen by force MAE on ``(R_val, F_val)``."""
        # the module's own device unless `device` says otherwise: under Lightning, the trainer's
        dev = torch.device(self.device_name) if self.device_name else self.R_train.device
        R_t = torch.tensor(np.asarray(R), dtype=torch.float64)  # a copy: R may be read-only
        z_t = torch.tensor(np.asarray(z), dtype=torch.long).reshape(-1)
        F_t = torch.tensor(np.asarray(F), dtype=torch.float64)
        M, N = R_t.shape[0], z_t.numel()
        if R_t.shape != (M, N, 3) or F_t.shape != (M, N, 3):
            raise DataError(f"SGDML.fit: R {tuple(R_t.shape)} and F {tuple(F_t.shape)} must be ({M}, {N}, 3)")
        perms = torch.as_tensor(self._choose_permutations(R_t.numpy(), z_t.numpy()))
        logger.info("SGDML: %d permutational symmetries", perms.shape[0])
        self.product_prices_ = []
        if perms.shape[0] > 1 and self.solve_settings.choose(3 * N * M) == "iterative":
            chosen, self.product_prices_ = price_group(R_t, perms.numpy(), self.max_product_seconds, dev)
            if is_distributed():  # a choice by timing: every process takes the first process's
                shared = [chosen]
                dist.broadcast_object_list(shared, src=0)
                chosen = shared[0]
            perms = torch.as_tensor(chosen)
        val = None
        if R_val is not None and F_val is not None and len(self.sigmas) > 1:
            val = (torch.as_tensor(np.asarray(R_val), dtype=torch.float64, device=dev),
                   torch.as_tensor(np.asarray(F_val), dtype=torch.float64, device=dev))
        sigma, result = self._select_sigma(R_t, F_t, perms, val, dev)
        self.solve_result_ = result
        self.R_train = R_t.to(dev)
        self.alphas = result.x.to(dev)
        self.perms = torch.as_tensor(perms, dtype=torch.long, device=dev)
        self.n_perms = torch.tensor(perms.shape[0], dtype=torch.long, device=dev)
        self.z = z_t.to(dev)
        self.sigma = torch.tensor(sigma, dtype=torch.float64, device=dev)
        self.lam = torch.tensor(self.lam_init, dtype=torch.float64, device=dev)
        self.train_indices = torch.as_tensor(
            np.arange(M) if train_indices is None else np.array(train_indices), dtype=torch.long, device=dev
        )
        self.fingerprint = torch.tensor(list(fingerprint.encode()), dtype=torch.uint8, device=dev)
        self.c = torch.zeros((), dtype=torch.float64, device=dev)
        self._kernel_cache = None
        if E is not None:
            E_t = torch.as_tensor(np.asarray(E), dtype=torch.float64, device=dev).reshape(-1)
            self.c = (E_t - self.predict_energy(R_t)).mean()
        logger.info("SGDML: sigma = %g, c = %.6f kcal/mol, %s", sigma, float(self.c), result.method)
        return self

    def _select_sigma(
        self, R: Tensor, F: Tensor, perms: Tensor, val: tuple[Tensor, Tensor] | None, dev: torch.device
    ) -> tuple[float, SolveResult]:
        """Choose σ by validation force MAE and return it with the solve on all training frames.

        Descriptors are shared across the grid. With more than ``sigma_search_size`` training
        frames the grid is scored on that many evenly spaced ones (exact, cheap) and only the chosen
        σ is solved on all of them: at M = 1,000 one iterative solve instead of one per σ.
        """
        self.sigma_scores_ = {}
        if val is None:
            op = SGDMLKernel.of(R, perms, self.sigmas[0], device=dev)
            return self.sigmas[0], self.solve_settings.solve(op, F.reshape(-1).to(dev), self.lam_init)
        M = R.shape[0]
        subset = self.sigma_search_size is not None and self.sigma_search_size < M
        frames = np.arange(M)
        if subset:  # evenly spaced, deterministic
            frames = np.linspace(0, M - 1, self.sigma_search_size).round().astype(int)
        base = SGDMLKernel.of(R[frames], perms, self.sigmas[0], device=dev)
        b = F[frames].reshape(-1).to(dev)
        best: tuple[float, float, SolveResult] | None = None
        for sigma in tqdm(self.sigmas, desc="sGDML σ grid", leave=False):
            op = base.with_sigma(sigma)
            result = self.solve_settings.solve(op, b, self.lam_init)
            mae = self._validation_mae(op, result.x, *val)
            self.sigma_scores_[sigma] = mae
            logger.info("SGDML: sigma %g -> validation force MAE %.4f kcal/mol/Å (%d training frames)",
                        sigma, mae, len(frames))
            if best is None or mae < best[0]:
                best = (mae, sigma, result)
        _, sigma, result = best
        if subset:
            logger.info("SGDML: sigma %g chosen on %d of %d training frames; solving on all of them",
                        sigma, len(frames), M)
            result = self.solve_settings.solve(SGDMLKernel.of(R, perms, sigma, device=dev), F.reshape(-1).to(dev),
                                                 self.lam_init)
        return sigma, result

    @staticmethod
    def _validation_mae(op: SGDMLKernel, alpha: Tensor, R_val: Tensor, F_val: Tensor) -> float:
        """Force MAE [kcal/mol/Å] of coefficients ``alpha`` of ``op`` on ``(R_val, F_val)``."""
        pred = vjp(pair_gradients(R_val), op.descriptor_forces(descriptor(R_val), op.weights(alpha)))
        return float((pred - F_val).abs().mean())

    def _choose_permutations(self, R: np.ndarray, z: np.ndarray) -> np.ndarray:
        n = len(z)
        if self.permutations is not None:
            perms = np.asarray(self.permutations, dtype=np.int64).reshape(-1, n)
            bad = [p.tolist() for p in perms if sorted(p.tolist()) != list(range(n)) or np.any(z[p] != z)]
            if bad:
                raise DataError(f"SGDML: permutations {bad[:3]} are not element-preserving permutations of {n} atoms")
            return np.unique(np.vstack([np.arange(n)[None], perms]), axis=0)
        if not self.use_symmetries:
            return np.arange(n, dtype=np.int64)[None]
        return find_permutations(
            R, z, max_symmetries=self.max_symmetries, max_geometries=self.max_symmetry_geometries
        )

    # -------------------------------------------------------------------------------- prediction
    def _positions(self, R: Tensor | np.ndarray) -> Tensor:
        R = torch.as_tensor(R).to(self.compute_device, torch.float64)
        if R.ndim == 2:
            R = R[None]
        if R.shape[1:] != self.R_train.shape[1:]:
            raise IncompatibleMoleculeError(
                f"SGDML: positions of shape {tuple(R.shape)}; this model expects "
                f"(frames, {self.R_train.shape[1]}, 3)"
            )
        return R

    def energy_of(self, R: Tensor) -> Tensor:
        """Energies [M] (kcal/mol) of ``R`` [M, N, 3] Å, differentiable w.r.t. ``R``."""
        op, weights = self._weights()
        return op.energy(descriptor(R), weights) + self.c

    def forward(self, pos: Tensor, z: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        """Energies [num_graphs] (kcal/mol) of a batch of the trained molecule (``pos`` [n, 3] Å)."""
        n = self.R_train.shape[1]
        if pos.shape[0] != num_graphs * n:
            raise IncompatibleMoleculeError(
                f"SGDML: {pos.shape[0]} atoms in {num_graphs} molecules; this model describes "
                f"{n}-atom molecules only"
            )
        self.check_atoms(z.reshape(num_graphs, n)[0])
        zz = z.reshape(num_graphs, n)
        if num_graphs > 1 and not torch.equal(zz, zz[:1].expand(num_graphs, n)):
            self.check_atoms(z)  # raises with the full list
        R = pos.to(self.compute_device, torch.float64).reshape(num_graphs, n, 3)
        return self.energy_of(R)

    def predict_energy(self, R: Tensor | np.ndarray) -> Tensor:
        """Energies [M] (kcal/mol) without gradients, in chunks."""
        R = self._positions(R)
        with torch.no_grad():
            step = self.predict_chunk
            return torch.cat([self.energy_of(R[s : s + step]) for s in range(0, len(R), step)])

    def predict(self, R: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """Energies [M] (kcal/mol) and forces [M, N, 3] (kcal/mol/Å, autograd) of ``R`` [M, N, 3] Å."""
        R = self._positions(R)
        return predict_frames(self, R, self.z, chunk=self.predict_chunk, device=self.compute_device)

    def predict_forces_analytic(self, R: Tensor | np.ndarray) -> Tensor:
        """Forces [M, N, 3] (kcal/mol/Å) from the analytic predictor ``F = K α`` (no autograd)."""
        R = self._positions(R)
        op, weights = self._weights()
        with torch.no_grad():
            return vjp(pair_gradients(R), op.descriptor_forces(descriptor(R), weights))
