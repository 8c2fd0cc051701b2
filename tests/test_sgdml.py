"""Tests of the sGDML kernel model, its symmetries and the exact solver (float64 throughout)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from potential_contract import PotentialContract

from geopatra.errors import IncompatibleMoleculeError, SolverError
from geopatra.models.sgdml import SGDML, SGDMLKernel, find_permutations
from geopatra.models.sgdml.descriptor import descriptor
from geopatra.models.sgdml.geometry import KernelGeometry
from geopatra.models.sgdml.symmetries import close_group, largest_subgroup
from geopatra.solvers import cholesky
from geopatra.solvers.cholesky import _factor_in_place, solve_cholesky
from geopatra.solvers.operator import DenseOperator, KernelOperator

F64 = torch.float64
DATA = Path(__file__).parent / "data"
#: The 6 permutations of ethanol (z = C C O H H H H H H, methyl H 5-7, methylene H 3-4): methyl
#: rotations (even permutations of 5, 6, 7) and the mirror plane, which swaps the CH2 hydrogens
#: together with two methyl hydrogens (odd permutations of 5, 6, 7 with 3 <-> 4).
ETHANOL_GROUP = sorted(
    tuple([0, 1, 2, *h2, *h3, 8])
    for h2, h3s in (([3, 4], ([5, 6, 7], [6, 7, 5], [7, 5, 6])), ([4, 3], ([5, 7, 6], [7, 6, 5], [6, 5, 7])))
    for h3 in h3s
)


@pytest.fixture(scope="module")
def ethanol() -> dict[str, np.ndarray]:
    d = np.load(DATA / "ethanol_ccsd_t-train.npz")
    return {"R": d["R"], "z": d["z"], "E": d["E"].reshape(-1), "F": d["F"]}


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "sgdml_reference_ethanol.npz"))


@pytest.fixture(scope="module")
def fitted(ethanol: dict) -> SGDML:
    """A small model on 30 ethanol frames with detected symmetries."""
    idx = np.arange(0, 300, 10)
    model = SGDML(sigmas=[20.0], lam=1e-6, solver="exact", max_symmetry_geometries=30)
    return model.fit(ethanol["R"][idx], ethanol["z"], ethanol["E"][idx], ethanol["F"][idx])


def _brute_force_kernel(R: torch.Tensor, perms: torch.Tensor, sigma: float) -> torch.Tensor:
    """K[i, j] = Σ_p ∂²k(x(R_i), x(R_j[p])) / ∂R_i ∂R_j by autograd (off-diagonal frame blocks)."""
    a = math.sqrt(5.0) / sigma

    def k(Ri: torch.Tensor, Rj: torch.Tensor) -> torch.Tensor:
        total = Ri.new_zeros(())
        for p in perms:
            r = torch.linalg.vector_norm(descriptor(Ri) - descriptor(Rj[p]))
            total = total + (1 + a * r + a * a * r * r / 3) * torch.exp(-a * r)
        return total

    M, N = R.shape[:2]
    d = 3 * N
    K = torch.full((M * d, M * d), float("nan"), dtype=F64)
    for i in range(M):
        for j in range(M):
            if i != j:
                H = torch.autograd.functional.hessian(k, (R[i], R[j]))[0][1]
                K[i * d : (i + 1) * d, j * d : (j + 1) * d] = H.reshape(d, d)
    return K


#: Groups on 5 atoms: every descriptor entry fixed (identity), some moved (a swap), all moved (C5).
GROUPS_OF_5 = {
    "identity": [[0, 1, 2, 3, 4]],
    "swap": [[0, 1, 2, 3, 4], [0, 2, 1, 3, 4]],
    "cyclic": [[(a + shift) % 5 for a in range(5)] for shift in range(5)],
}


@pytest.mark.parametrize("group", list(GROUPS_OF_5))
def test_kernel_matches_autograd_hessian_and_is_spd(group: str) -> None:
    R = torch.randn(3, 5, 3, dtype=F64) * 1.5
    perms = torch.tensor(GROUPS_OF_5[group])
    op = SGDMLKernel.of(R, perms, sigma=2.0)
    K = op.block(torch.arange(3), torch.arange(3))
    ref = _brute_force_kernel(R, perms, 2.0)
    off = ~torch.isnan(ref)
    torch.testing.assert_close(K[off], ref[off], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(K, K.T, rtol=0, atol=1e-13)
    # PSD, with exactly the 6 rigid motions of each frame in the null space (invariant descriptor).
    eig = torch.linalg.eigvalsh(K)
    assert eig.min() >= -1e-12 * eig.max()
    assert int((eig < 1e-9 * eig.max()).sum()) == 6 * 3
    assert torch.linalg.cholesky_ex(K + 1e-8 * torch.eye(op.n, dtype=F64)).info == 0
    # The operator protocol: matvec, columns and diagonal agree with the dense blocks.
    assert isinstance(op, KernelOperator)
    v = torch.randn(op.n, dtype=F64)
    torch.testing.assert_close(op.matvec(v), K @ v, rtol=1e-11, atol=1e-11)
    idx = torch.tensor([40, 2, 17, 3])
    torch.testing.assert_close(op.columns(idx), K[:, idx], rtol=0, atol=1e-13)
    torch.testing.assert_close(op.diagonal(), K.diagonal(), rtol=0, atol=1e-13)


def test_fast_products_equal_dense_kernel(ethanol: dict) -> None:
    """The GEMM products (matmat/matvec: descriptor space) equal the atom-space dense blocks, on
    ethanol with its 6 permutations; also block() with index tensors, fill_dense and columns."""
    R = torch.as_tensor(ethanol["R"][:350:57])  # 7 frames
    perms = torch.tensor(ETHANOL_GROUP)
    op = SGDMLKernel.of(R, perms, sigma=3.0)
    frames = torch.arange(7)
    K = op.block(frames, frames)
    torch.testing.assert_close(K, K.T, rtol=0, atol=1e-12)
    V = torch.randn(op.n, 4, dtype=F64)
    scale = float(K.abs().max())
    torch.testing.assert_close(op.matmat(V), K @ V, rtol=1e-10, atol=1e-11 * scale)
    torch.testing.assert_close(op.matvec(V[:, 1]), K @ V[:, 1], rtol=1e-10, atol=1e-11 * scale)
    rows, cols = torch.tensor([4, 0, 6]), torch.tensor([5, 1, 2, 0])
    d = 3 * 9
    sub = K.view(7, d, 7, d)[rows][:, :, cols].reshape(3 * d, 4 * d)
    torch.testing.assert_close(op.block(rows, cols), sub, rtol=0, atol=1e-13 * scale)
    full, lower = torch.empty_like(K), torch.full_like(K, float("nan"))
    op.fill_dense(full)
    op.fill_dense(lower, lower_only=True)
    torch.testing.assert_close(full, K, rtol=0, atol=1e-14 * scale)
    mask = torch.ones_like(K, dtype=torch.bool).tril()
    torch.testing.assert_close(lower[mask], K[mask], rtol=0, atol=1e-14 * scale)
    idx = torch.tensor([150, 3, 3, 60, 61, 188])
    torch.testing.assert_close(op.columns(idx), K[:, idx], rtol=0, atol=1e-13 * scale)
    torch.testing.assert_close(op.diagonal(), K.diagonal(), rtol=1e-12, atol=1e-13 * scale)
    # The exact solver on the operator (lower-triangle assembly) equals a dense solve.
    b = torch.randn(op.n, dtype=F64)
    res = solve_cholesky(op, b, 1e-3, progress=False)
    ref = torch.linalg.solve(K + 1e-3 * torch.eye(op.n, dtype=F64), b)
    torch.testing.assert_close(res.x, ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))


def test_kernels_of_every_sigma_share_one_frozen_geometry(ethanol: dict) -> None:
    """with_sigma reuses the σ-independent arrays, and gives what a kernel built afresh gives."""
    R = torch.as_tensor(ethanol["R"][:300:60])
    perms = torch.tensor(ETHANOL_GROUP)
    op = SGDMLKernel.of(R, perms, sigma=3.0)
    other, fresh = op.with_sigma(5.0), SGDMLKernel.of(R, perms, sigma=5.0)
    assert other.geometry is op.geometry and other.sigma == 5.0 and op.sigma == 3.0
    V = torch.randn(op.n, 2, dtype=F64)
    torch.testing.assert_close(other.matmat(V), fresh.matmat(V), rtol=1e-13, atol=0)
    frames = torch.arange(5)
    torch.testing.assert_close(other.block(frames, frames), fresh.block(frames, frames), rtol=1e-13, atol=0)
    assert not torch.allclose(op.matmat(V), other.matmat(V))
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.geometry.x = op.geometry.x * 2


@pytest.mark.parametrize("group", ["identity", "swap", "cyclic", "ethanol"])
def test_entry_classes_reproduce_every_permutation_with_one_term_per_coset(group: str) -> None:
    perms = torch.tensor(ETHANOL_GROUP if group == "ethanol" else GROUPS_OF_5[group])
    geometry = KernelGeometry.of(torch.randn(4, perms.shape[1], 3, dtype=F64), perms)
    permuted = geometry.permuted(slice(None))  # [M, S, D]
    entries = torch.cat([c.entries for c in geometry.classes])
    assert torch.equal(entries.sort().values, torch.arange(geometry.x.shape[1]))  # a partition of D
    for c in geometry.classes:
        assert torch.equal(permuted[:, :, c.entries], c.x[:, c.coset])  # P_p x = x[images[coset[p]]]
        assert c.n_cosets == len(torch.unique(permuted[:, :, c.entries], dim=1)[0])  # cosets are distinct
    if group == "identity":
        assert len(geometry.classes) == 1 and geometry.classes[0].n_cosets == 1
    cost = sum(c.n_cosets * c.entries.numel() for c in geometry.classes)
    assert geometry.x.shape[1] <= cost <= len(perms) * geometry.x.shape[1]


def test_exact_solver_matches_dense_solve() -> None:
    A = torch.randn(60, 40, dtype=F64)
    K = A @ A.T  # PSD, rank 40
    b = torch.randn(60, dtype=F64)
    res = solve_cholesky(DenseOperator(K), b, 0.5, block_columns=7, progress=False)
    ref = torch.linalg.solve(K + 0.5 * torch.eye(60, dtype=F64), b)
    torch.testing.assert_close(res.x, ref, rtol=1e-11, atol=1e-12)
    assert res.iterations == 0 and res.method == "cholesky" and res.residual < 1e-10


@pytest.mark.parametrize("threads, lapack", [(2, False), (1, True)])
def test_factorisation_in_place_reads_only_the_lower_triangle(threads, lapack, torch_threads, monkeypatch) -> None:
    """2 threads: the blocked loop, over several panels (7 columns each, a ragged last one); 1 thread:
    LAPACK dpotrf on K's memory. Either way, with NaN above the diagonal, the factor equals
    torch's, and an indefinite matrix (failing in the 7th panel) is reported."""
    calls = []
    real = cholesky._lapack_factor_in_place
    monkeypatch.setattr(cholesky, "_lapack_factor_in_place", lambda K: calls.append(1) or real(K))
    torch_threads(threads)
    A = torch.randn(60, 80, dtype=F64)
    K = A @ A.T
    work = K.clone()
    work[torch.ones_like(K, dtype=torch.bool).triu(1)] = float("nan")
    assert _factor_in_place(work, panel=7)
    torch.testing.assert_close(work.tril(), torch.linalg.cholesky(K), rtol=1e-12, atol=1e-12)
    K[45, 45] = -1.0
    assert not _factor_in_place(K.clone(), panel=7)
    assert bool(calls) == lapack


def test_exact_solver_jitter_warns_and_budget_refuses() -> None:
    A = torch.randn(30, 5, dtype=F64)
    K = A @ A.T
    K.diagonal().sub_(1e-9 * float(K.diagonal().mean()))  # slightly indefinite
    with pytest.warns(RuntimeWarning, match="jitter"):
        res = solve_cholesky(DenseOperator(K), torch.randn(30, dtype=F64), 0.0, progress=False)
    assert res.method == "cholesky+jitter" and torch.isfinite(res.x).all()
    with pytest.raises(SolverError, match="solver: iterative"):
        solve_cholesky(DenseOperator(K), torch.randn(30, dtype=F64), 1e-3, memory_budget_gb=1e-6)


def test_model_refuses_exact_over_budget(ethanol: dict) -> None:
    model = SGDML(sigmas=[20.0], solver="exact", memory_budget_gb=1e-4, use_symmetries=False)
    with pytest.raises(SolverError, match="memory_budget_gb"):
        model.fit(ethanol["R"][:20], ethanol["z"], ethanol["E"][:20], ethanol["F"][:20])


def test_symmetry_detection_ethanol_deterministic(ethanol: dict, golden: dict) -> None:
    R = ethanol["R"][golden["train_indices"]]
    perms = find_permutations(R, ethanol["z"], max_geometries=40)
    assert [tuple(p) for p in perms] == ETHANOL_GROUP
    # The reference sGDML finds the same group on the same training frames.
    assert sorted(tuple(p) for p in golden["perms"]) == ETHANOL_GROUP
    np.testing.assert_array_equal(find_permutations(R, ethanol["z"], max_geometries=40), perms)
    # Cap: above max_symmetries a proper subgroup is kept (order 3 or 2: Lagrange, 6 = 2 * 3).
    sub = find_permutations(R, ethanol["z"], max_geometries=40, max_symmetries=4)
    assert len(sub) in (2, 3) and {tuple(p) for p in sub} <= set(ETHANOL_GROUP)
    assert len(close_group(sub, 100)) == len(sub)


def _rotors(n_rotors: int) -> np.ndarray:
    """One 3-cycle per rotor on atoms (3r, 3r+1, 3r+2) [n_rotors, 3 n_rotors]."""
    perms = np.tile(np.arange(3 * n_rotors), (n_rotors, 1))
    for r in range(n_rotors):
        perms[r, 3 * r : 3 * r + 3] = [3 * r + 1, 3 * r + 2, 3 * r]
    return perms


def test_close_group_and_cap() -> None:
    a, b, c = _rotors(3)
    assert len(close_group(np.stack([a, b]), 9)) == 9  # C3 x C3
    assert close_group(np.stack([a, b]), 8) is None
    assert len(close_group(np.stack([a, b, c]), 27)) == 27


def test_largest_subgroup_keeps_what_fits_elementary_and_supported_first() -> None:
    a, b, c = _rotors(3)
    ab = a[b]  # rotates the first two rotors together: moves 6 atoms
    perms, support = np.stack([ab, a, b, c]), np.array([50, 3, 1, 9])
    sub = largest_subgroup(perms, support, max_size=10)
    # c (most matched of the one-rotor perms), then a fit (9); b and ab would make 27.
    members = {tuple(p) for p in sub}
    assert len(sub) == 9 and tuple(c) in members and tuple(a) in members and tuple(b) not in members
    assert len(close_group(sub, 100)) == 9 and tuple(range(9)) == tuple(sub[0])
    # Everything fits: the whole group; nothing but the identity fits: the identity.
    assert len(largest_subgroup(perms, support, max_size=27)) == 27
    np.testing.assert_array_equal(largest_subgroup(perms, support, max_size=2), np.arange(9)[None])


def test_symmetry_cap_keeps_a_methyl_subgroup_on_ac_ala3_nhme() -> None:
    """The bundled frames hold five methyl rotors (3^5 = 243); a cap of 64 keeps 27, not the identity."""
    from geopatra.data import read_dataset

    ds = read_dataset("bundled")
    R, z = ds.R[:600], ds.z
    full = find_permutations(R, z, max_symmetries=512, max_geometries=60)
    sub = find_permutations(R, z, max_symmetries=64, max_geometries=60)
    assert len(full) == 243 and len(sub) == 27
    assert {tuple(p) for p in sub} <= {tuple(p) for p in full}
    assert len(close_group(sub, 1000)) == 27
    moved = np.unique(np.nonzero(full != np.arange(len(z)))[1])
    assert len(moved) == 15 and np.all(z[moved] == 1)  # only the 15 methyl hydrogens move


def test_golden_agreement_with_reference_sgdml(ethanol: dict, golden: dict) -> None:
    """Same frames, σ, λ and permutations as sGDML 1.0.3 (``experiments/sgdml_reference``).

    sGDML solves with labels scaled by their std and stores -α; the predictions are invariant to
    that. Both integration constants are mean(E_train - Ê_train); they differ only by rounding of
    the large un-shifted energies, so energies are compared after aligning the means.
    """
    tr, te = golden["train_indices"], golden["test_indices"]
    model = SGDML(
        sigmas=[float(golden["sigma"])], lam=float(golden["lam"]),
        permutations=golden["perms"].tolist(), solver="exact",
    ).fit(ethanol["R"][tr], ethanol["z"], ethanol["E"][tr], ethanol["F"][tr])
    E, F = model.predict(ethanol["R"][te])
    F_ref, E_ref = golden["F_pred"], golden["E_pred"]
    rel_rms = np.sqrt(((F.numpy() - F_ref) ** 2).mean() / (F_ref**2).mean())
    assert rel_rms <= 1e-6
    dE = E.numpy() - E_ref
    assert np.abs(dE - dE.mean()).max() <= 1e-5
    assert abs(dE.mean()) <= 1e-2  # the constants themselves agree to rounding


def test_forces_autograd_equal_analytic(fitted: SGDML, ethanol: dict) -> None:
    R = ethanol["R"][500:520]
    _, F = fitted.predict(R)
    Fa = fitted.predict_forces_analytic(R)
    rel = torch.linalg.vector_norm(F - Fa) / torch.linalg.vector_norm(Fa)
    assert rel <= 1e-8
    # Also at a training geometry (r = 0 for the identity permutation).
    _, Ft = fitted.predict(fitted.R_train[:2])
    assert torch.isfinite(Ft).all()
    torch.testing.assert_close(Ft, fitted.predict_forces_analytic(fitted.R_train[:2]), rtol=1e-8, atol=1e-8)


def test_invariant_under_every_symmetry_it_found(fitted: SGDML, ethanol: dict) -> None:
    assert int(fitted.n_perms) == 6
    R = torch.as_tensor(ethanol["R"][800:804], dtype=F64)
    E0 = fitted.predict_energy(R)
    for p in fitted.perms:
        torch.testing.assert_close(fitted.predict_energy(R[:, p]), E0, rtol=1e-12, atol=1e-8)


class TestSGDMLContract(PotentialContract):
    """O(3) with reflections, translation, a symmetry permutation, batch = single, no cross-frame
    gradient, finite differences and state-dict round trip."""

    @pytest.fixture
    def potential(self, fitted: SGDML) -> SGDML:
        return fitted

    @pytest.fixture
    def fresh_potential(self) -> SGDML:
        return SGDML(sigmas=[20.0], solver="exact", max_symmetry_geometries=30)

    @pytest.fixture
    def structures(self, ethanol: dict) -> list:
        return [(ethanol["R"][i], ethanol["z"]) for i in (700, 800, 900)]

    def permutation(self, potential: SGDML, z: torch.Tensor) -> torch.Tensor:
        identity = torch.arange(len(z))
        return next(p for p in potential.perms if not torch.equal(p.cpu(), identity))


def test_forward_batch_matches_predict(fitted: SGDML, ethanol: dict) -> None:
    from geopatra.models.forces import energy_and_forces

    R = torch.as_tensor(ethanol["R"][900:903], dtype=F64)
    z = torch.as_tensor(ethanol["z"]).repeat(3)
    batch = torch.arange(3).repeat_interleave(9)
    E, F = energy_and_forces(fitted, R.reshape(-1, 3), z, batch, 3)
    E2, F2 = fitted.predict(R)
    torch.testing.assert_close(E, E2, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(F, F2.reshape(-1, 3), rtol=1e-10, atol=1e-10)


def test_state_dict_carries_the_solution(fitted: SGDML, ethanol: dict) -> None:
    """Beyond the contract's round trip: fitted state, σ and training indices, and predict()."""
    fresh = SGDML(sigmas=[20.0], solver="exact", max_symmetry_geometries=30)
    assert not fresh.is_fitted
    fresh.load_state_dict(fitted.state_dict())
    assert fresh.is_fitted and float(fresh.sigma) == 20.0
    R = ethanol["R"][600:605]
    E1, F1 = fitted.predict(R)
    E2, F2 = fresh.predict(R)
    assert torch.equal(E1, E2) and torch.equal(F1, F2)
    assert torch.equal(fresh.train_indices, fitted.train_indices)


def test_wrong_molecule_raises(fitted: SGDML, ethanol: dict) -> None:
    z = torch.as_tensor(ethanol["z"])
    with pytest.raises(IncompatibleMoleculeError, match="atomic numbers"):
        fitted.check_atoms(z[[1, 0, 2, 3, 4, 5, 6, 7, 8]].flip(0))
    with pytest.raises(IncompatibleMoleculeError):
        fitted.check_atoms(z[:8])
    with pytest.raises(IncompatibleMoleculeError):
        fitted.predict(ethanol["R"][:2, :8])
    pos = torch.as_tensor(ethanol["R"][0, :8], dtype=F64)
    with pytest.raises(IncompatibleMoleculeError):
        fitted(pos, z[:8], torch.zeros(8, dtype=torch.long), 1)


def test_sigma_selected_on_validation(ethanol: dict) -> None:
    tr, va = np.arange(0, 200, 10), np.arange(5, 200, 10)
    model = SGDML(sigmas=[0.5, 20.0], use_symmetries=False, solver="exact")
    model.fit(ethanol["R"][tr], ethanol["z"], ethanol["E"][tr], ethanol["F"][tr],
              R_val=ethanol["R"][va], F_val=ethanol["F"][va])
    assert set(model.sigma_scores_) == {0.5, 20.0}
    assert float(model.sigma) == min(model.sigma_scores_, key=model.sigma_scores_.get)
    assert model.sigma_scores_[0.5] != model.sigma_scores_[20.0]


def test_sigma_searched_on_a_subset_then_solved_on_all(ethanol: dict) -> None:
    """With sigma_search_size below the training size, σ is scored on that many evenly spaced
    frames, and the final model is the full solve at that σ (same as a one-σ fit)."""
    tr, va = np.arange(0, 400, 10), np.arange(5, 400, 10)  # 40 training frames
    args = (ethanol["R"][tr], ethanol["z"], ethanol["E"][tr], ethanol["F"][tr])
    val = dict(R_val=ethanol["R"][va], F_val=ethanol["F"][va])
    grid = SGDML(sigmas=[0.5, 20.0], use_symmetries=False, solver="exact", sigma_search_size=10)
    grid.fit(*args, **val)
    full_grid = SGDML(sigmas=[0.5, 20.0], use_symmetries=False, solver="exact", sigma_search_size=None)
    full_grid.fit(*args, **val)
    chosen = float(grid.sigma)
    assert chosen == min(grid.sigma_scores_, key=grid.sigma_scores_.get)
    assert grid.sigma_scores_[0.5] != full_grid.sigma_scores_[0.5]  # scored on 10 frames, not 40
    single = SGDML(sigmas=[chosen], use_symmetries=False, solver="exact").fit(*args)
    assert grid.alphas.shape == (40 * 9 * 3,)
    torch.testing.assert_close(grid.alphas, single.alphas, rtol=0, atol=0)
    with pytest.raises(ValueError, match="sigma_search_size"):
        SGDML(sigma_search_size=1)
