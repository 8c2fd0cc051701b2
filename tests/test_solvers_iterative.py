"""Matrix-free PCG and the Nyström preconditioner (geopatra.solvers.pcg / nystrom / operator)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from geopatra.errors import SolverError
from geopatra.solvers.cg_state import read_checkpoint
from geopatra.solvers.nystrom import (
    SELECTIONS,
    NystromPreconditioner,
    pivoted_cholesky,
    select_columns,
)
from geopatra.solvers.operator import DenseOperator, KernelOperator
from geopatra.solvers.pcg import pcg, solve_iterative
from geopatra.solvers.result import SolveResult

F64 = torch.float64


def random_spd(n: int, cond: float, seed: int) -> torch.Tensor:
    """Random SPD matrix [n, n] with eigenvalues log-spaced in [1, cond]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    eig = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=F64)
    A = (Q * eig) @ Q.T
    return 0.5 * (A + A.T)


def matern_gram(n: int, dim: int, length: float, seed: int) -> torch.Tensor:
    """Matérn-5/2 Gram matrix [n, n] of uniform random points in [0, 1]^dim (ill-conditioned)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, dim, generator=g, dtype=F64)
    s = 5**0.5 * torch.cdist(X, X) / length
    return (1 + s + s**2 / 3) * torch.exp(-s)


@pytest.fixture(scope="module")
def kernel_problem() -> tuple[DenseOperator, torch.Tensor, float]:
    """Matérn Gram matrix of 400 points in 2-D with λ = 1e-4: plain CG needs hundreds of steps."""
    K = matern_gram(400, 2, 0.5, seed=1)
    b = torch.randn(400, generator=torch.Generator().manual_seed(2), dtype=F64)
    return DenseOperator(K), b, 1e-4


def dense_solution(op: DenseOperator, b: torch.Tensor, lam: float) -> torch.Tensor:
    return torch.linalg.solve(op.K + lam * torch.eye(op.n, dtype=F64), b)


# ---------------------------------------------------------------------------------- operator ----


def test_dense_operator_implements_protocol() -> None:
    K = random_spd(20, 10.0, seed=0)
    op = DenseOperator(K)
    assert isinstance(op, KernelOperator)
    v = torch.randn(20, dtype=F64)
    torch.testing.assert_close(op.matvec(v), K @ v)
    idx = torch.tensor([3, 0, 7])
    torch.testing.assert_close(op.columns(idx), K[:, idx])
    torch.testing.assert_close(op.diagonal(), K.diagonal())
    with pytest.raises(ValueError, match="square"):
        DenseOperator(torch.zeros(3, 4, dtype=F64))


# --------------------------------------------------------------------------------------- pcg ----


@pytest.mark.parametrize("n, cond, seed", [(50, 1e2, 0), (200, 1e4, 1)])
def test_pcg_matches_dense_solve(n: int, cond: float, seed: int) -> None:
    A = random_spd(n, cond, seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(seed + 10), dtype=F64)
    x_ref = torch.linalg.solve(A, b)
    jacobi = 1.0 / A.diagonal()
    for precond in (None, lambda r: jacobi * r):
        res = pcg(lambda v: A @ v, b, preconditioner=precond, tol=1e-12, progress=False)
        assert isinstance(res, SolveResult)
        assert res.converged
        assert res.residual <= 1e-12
        assert 0 < res.iterations <= 10 * n
        # the reported residual is the true one
        true = float(torch.linalg.vector_norm(b - A @ res.x) / torch.linalg.vector_norm(b))
        assert res.residual == pytest.approx(true, rel=1e-6)
        err = float(torch.linalg.vector_norm(res.x - x_ref) / torch.linalg.vector_norm(x_ref))
        assert err <= cond * 1e-11


def test_pcg_zero_rhs_and_bad_arguments() -> None:
    A = random_spd(10, 10.0, 0)
    res = pcg(lambda v: A @ v, torch.zeros(10, dtype=F64), progress=False)
    assert res.converged and res.iterations == 0 and not bool(res.x.any())
    with pytest.raises(ValueError):
        pcg(lambda v: A @ v, torch.ones(10, 1, dtype=F64), progress=False)
    with pytest.raises(ValueError):
        pcg(lambda v: A @ v, torch.ones(10, dtype=F64), tol=0.0, progress=False)


def test_pcg_stops_at_rounding_floor() -> None:
    """An unattainable tolerance ends early, unconverged, instead of iterating to max_iter."""
    A = random_spd(100, 1e4, seed=3)
    b = torch.randn(100, dtype=F64)
    res = pcg(lambda v: A @ v, b, tol=1e-19, max_iter=5000, progress=False)
    assert not res.converged
    assert res.iterations < 2000
    assert res.residual < 1e-11


def test_pcg_raises_on_indefinite_operator() -> None:
    A = -random_spd(10, 10.0, 0)
    with pytest.raises(SolverError, match="positive"):
        pcg(lambda v: A @ v, torch.ones(10, dtype=F64), progress=False)


# ---------------------------------------------------------------------------------- nyström ----


@pytest.mark.parametrize("method", SELECTIONS)
def test_woodbury_equals_dense_inverse(method: str) -> None:
    n, k, lam = 60, 15, 1e-2
    K = matern_gram(n, 3, 0.3, seed=3)
    op = DenseOperator(K)
    P = NystromPreconditioner.build(op, lam, k, method, seed=0)
    assert P.k == k and P.indices.numel() == k and P.indices.unique().numel() == k
    S = P.indices
    C, W = K[:, S], K[S][:, S]
    K_nys = C @ torch.linalg.solve(W, C.T)
    P_dense_inv = torch.linalg.inv(K_nys + lam * torch.eye(n, dtype=F64))
    applied = P(torch.eye(n, dtype=F64))  # block application [n, n]
    torch.testing.assert_close(applied, P_dense_inv, rtol=1e-8, atol=1e-8 / lam)
    v = torch.randn(n, dtype=F64)
    torch.testing.assert_close(P(v), P_dense_inv @ v, rtol=1e-8, atol=1e-8 / lam)


@pytest.mark.parametrize("method", SELECTIONS)
def test_build_shows_progress_without_changing_the_preconditioner(method: str, capsys) -> None:
    K = matern_gram(60, 3, 0.3, seed=3)
    quiet = NystromPreconditioner.build(DenseOperator(K), 1e-2, 15, method, seed=0)
    assert "Nyström" not in capsys.readouterr().err
    shown = NystromPreconditioner.build(DenseOperator(K), 1e-2, 15, method, seed=0, progress=True)
    assert "Nyström" in capsys.readouterr().err
    assert torch.equal(quiet.indices, shown.indices)
    v = torch.randn(60, dtype=F64)
    torch.testing.assert_close(quiet(v), shown(v), rtol=0, atol=0)


@pytest.mark.parametrize("method", SELECTIONS)
def test_grouped_selection_takes_whole_groups(method: str) -> None:
    """group_size=g picks ceil(k/g) whole groups of g consecutive columns (sGDML: geometries)."""
    n, g, lam = 60, 5, 1e-2
    K = matern_gram(n, 3, 0.3, seed=3)
    P = NystromPreconditioner.build(DenseOperator(K), lam, 12, method, seed=0, group_size=g)
    idx = torch.sort(P.indices).values
    assert idx.numel() == 15 and P.k == 15
    groups = idx.reshape(3, g)
    assert torch.equal(groups - groups[:, :1], torch.arange(g).expand(3, g))
    assert bool((groups[:, 0] % g == 0).all())
    C, W = K[:, idx], K[idx][:, idx]
    P_dense_inv = torch.linalg.inv(C @ torch.linalg.solve(W, C.T) + lam * torch.eye(n, dtype=F64))
    torch.testing.assert_close(P(torch.eye(n, dtype=F64)), P_dense_inv, rtol=1e-8,
                               atol=1e-8 / lam)
    with pytest.raises(ValueError, match="group_size"):
        NystromPreconditioner.build(DenseOperator(K), lam, 12, method, group_size=7)


def test_pivoted_cholesky_factor_and_pivots() -> None:
    K = matern_gram(80, 2, 0.4, seed=4)
    idx, F = pivoted_cholesky(DenseOperator(K), 20)
    assert F.shape == (80, 20)
    assert int(idx[0]) == int(torch.argmax(K.diagonal()))
    C, W = K[:, idx], K[idx][:, idx]
    torch.testing.assert_close(F @ F.T, C @ torch.linalg.solve(W, C.T), rtol=1e-9, atol=1e-9)
    # full rank: exact factorisation
    idx, F = pivoted_cholesky(DenseOperator(K), 80)
    torch.testing.assert_close(F @ F.T, K, rtol=1e-9, atol=1e-9)
    # low-rank matrix: stops at the numerical rank
    Z = torch.randn(50, 5, dtype=F64)
    idx, F = pivoted_cholesky(DenseOperator(Z @ Z.T), 20)
    assert F.shape[1] == 5


def test_selection_is_seeded_and_validated(kernel_problem) -> None:
    op, _, lam = kernel_problem
    for method in ("random", "leverage"):
        a = select_columns(op, 40, method, lam=lam, seed=7)
        b = select_columns(op, 40, method, lam=lam, seed=7)
        c = select_columns(op, 40, method, lam=lam, seed=8)
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert a.numel() == 40 and a.unique().numel() == 40
    with pytest.raises(ValueError, match="selection"):
        select_columns(op, 10, "greedy", lam=lam)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="selection"):
        solve_iterative(op, torch.ones(op.n, dtype=F64), lam, selection="uniform")  # type: ignore
    with pytest.raises(ValueError, match="lam"):
        NystromPreconditioner.build(op, 0.0, 10, "random")
    with pytest.raises(ValueError, match="preconditioner"):
        solve_iterative(op, torch.ones(op.n, dtype=F64), lam, preconditioner="jacobi")  # type: ignore


def test_leverage_prefers_poorly_covered_points() -> None:
    """A cluster of 380 near-duplicates plus 20 isolated points: leverage picks the isolated ones."""
    g = torch.Generator().manual_seed(5)
    X = torch.cat([0.01 * torch.rand(380, 2, generator=g, dtype=F64),
                   1.0 + 5 * torch.rand(20, 2, generator=g, dtype=F64)])
    K = torch.exp(-0.5 * torch.cdist(X, X) ** 2 / 0.3**2)
    op = DenseOperator(K)
    lev = select_columns(op, 40, "leverage", lam=1e-6, seed=0)
    rnd = select_columns(op, 40, "random", lam=1e-6, seed=0)
    assert int((lev >= 380).sum()) >= 15
    assert int((rnd >= 380).sum()) <= 8


@pytest.mark.parametrize("method", SELECTIONS)
def test_nystrom_cuts_iterations_fivefold(kernel_problem, method: str) -> None:
    op, b, lam = kernel_problem
    budget = 2000
    plain = solve_iterative(op, b, lam, preconditioner="none", tol=1e-8, max_iter=budget,
                            progress=False)
    pre = solve_iterative(op, b, lam, k=100, selection=method, adaptive=False, tol=1e-8,
                          max_iter=budget, progress=False)
    assert pre.converged and pre.method == f"pcg[nystrom-{method},k=100]"
    assert (not plain.converged) or pre.iterations * 5 <= plain.iterations, (
        plain.iterations, pre.iterations)
    x_ref = dense_solution(op, b, lam)
    err = float(torch.linalg.vector_norm(pre.x - x_ref) / torch.linalg.vector_norm(x_ref))
    assert err < 1e-6


# ------------------------------------------------------------------------ checkpoint/resume ----


class CountingOperator(DenseOperator):
    def __init__(self, K: torch.Tensor) -> None:
        super().__init__(K)
        self.matvecs = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.matvecs += 1
        return super().matvec(v)


class Interrupt(Exception):
    pass


def _interrupting(matvec, after: int):
    calls = {"n": 0}

    def wrapped(v):
        calls["n"] += 1
        if calls["n"] > after:
            raise Interrupt
        return matvec(v)

    return wrapped


def test_pcg_resume_after_interruption(tmp_path: Path) -> None:
    A = random_spd(150, 1e4, seed=6)
    b = torch.randn(150, dtype=F64)
    full = pcg(lambda v: A @ v, b, tol=1e-10, progress=False)
    assert full.converged and full.iterations > 40
    ckpt = tmp_path / "cg.pt"
    with pytest.raises(Interrupt):
        pcg(_interrupting(lambda v: A @ v, 33), b, tol=1e-10, checkpoint_path=ckpt,
            checkpoint_every=10, progress=False)
    assert read_checkpoint(ckpt, b)["iteration"] == 30
    calls = []
    resumed = pcg(lambda v: calls.append(1) or A @ v, b, tol=1e-10, checkpoint_path=ckpt,
                  checkpoint_every=10, progress=False)
    assert resumed.converged
    assert len(calls) <= full.iterations - 30 + 1  # the work before the checkpoint is not redone
    assert resumed.iterations == full.iterations
    torch.testing.assert_close(resumed.x, full.x, rtol=1e-12, atol=1e-12)
    # a checkpoint of another right-hand side is ignored, with a warning
    with pytest.warns(UserWarning, match="another right-hand side"):
        other = pcg(lambda v: A @ v, b + 1.0, tol=1e-10, checkpoint_path=ckpt, progress=False)
    x_other = torch.linalg.solve(A, b + 1.0)
    assert other.converged
    assert float(torch.linalg.vector_norm(other.x - x_other) / x_other.norm()) < 1e-5


def test_solve_iterative_resume_via_max_iter(kernel_problem, tmp_path: Path) -> None:
    op, b, lam = kernel_problem
    kw = {"k": 40, "selection": "leverage", "adaptive": False, "tol": 1e-10, "progress": False}
    full = solve_iterative(op, b, lam, **kw)
    assert full.converged and full.iterations > 20
    ckpt = tmp_path / "pcg.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        part = solve_iterative(op, b, lam, max_iter=15, checkpoint_path=ckpt, checkpoint_every=4,
                               **kw)
    assert not part.converged and part.iterations == 15
    counting = CountingOperator(op.K)
    resumed = solve_iterative(counting, b, lam, checkpoint_path=ckpt, checkpoint_every=4, **kw)
    assert resumed.converged and resumed.iterations == full.iterations
    assert counting.matvecs <= full.iterations - 15 + 1
    torch.testing.assert_close(resumed.x, full.x, rtol=1e-11, atol=1e-11)


# ------------------------------------------------------------------------ adaptive / failure ----


def test_adaptive_k_growth(kernel_problem) -> None:
    op, b, lam = kernel_problem
    kw = {"selection": "pivoted_cholesky", "tol": 1e-8, "max_iter": 300, "progress": False,
              "stagnation_window": 20, "stagnation_factor": 10.0}
    with pytest.warns(RuntimeWarning, match="did not converge"):
        fixed = solve_iterative(op, b, lam, k=4, adaptive=False, **kw)
    assert not fixed.converged
    grown = solve_iterative(op, b, lam, k=4, adaptive=True, k_max=256, **kw)
    assert grown.converged
    k_final = int(grown.method.split("k=")[1].rstrip("]"))
    assert 4 < k_final <= 256
    x_ref = dense_solution(op, b, lam)
    assert float(torch.linalg.vector_norm(grown.x - x_ref) / x_ref.norm()) < 1e-6


def test_failure_returns_unconverged_or_raises(kernel_problem) -> None:
    op, b, lam = kernel_problem
    with pytest.warns(RuntimeWarning, match="did not converge"):
        res = solve_iterative(op, b, lam, preconditioner="none", max_iter=10, progress=False)
    assert not res.converged and res.iterations == 10 and res.residual > 1e-8
    with pytest.raises(SolverError, match="did not converge") as info:
        solve_iterative(op, b, lam, k=5, adaptive=False, max_iter=10, progress=False,
                        raise_on_failure=True)
    assert info.value.iterations == 10 and info.value.residual > 1e-8


# ------------------------------------------------------------------ real sGDML kernel (ethanol) ----


@pytest.fixture(scope="module")
def ethanol_sgdml(data_dir_module: Path):
    """sGDML force kernel on 30 MD17 ethanol frames (n = 810), its forces and 20 test frames."""
    import numpy as np

    from geopatra.models.sgdml import SGDMLKernel, find_permutations

    d = np.load(data_dir_module / "md17_ethanol_2000.npz")
    rng = np.random.default_rng(0)
    frames = rng.choice(len(d["R"]), 50, replace=False)
    train, test = np.sort(frames[:30]), np.sort(frames[30:])
    perms = find_permutations(d["R"][train], d["z"])
    op = SGDMLKernel.of(torch.as_tensor(d["R"][train]), torch.as_tensor(perms), sigma=20.0)
    b = torch.as_tensor(d["F"][train], dtype=F64).reshape(-1)
    return d, train, test, op, b


@pytest.fixture(scope="module")
def data_dir_module() -> Path:
    return Path(__file__).parent / "data"


def test_sgdml_iterative_matches_cholesky_forces(ethanol_sgdml) -> None:
    """Fitting sGDML with the iterative solver predicts the same forces as with Cholesky."""
    from geopatra.models.sgdml import SGDML

    d, train, test, _, _ = ethanol_sgdml
    fits = {}
    for solver in ("exact", "iterative"):
        model = SGDML(sigmas=[20.0], lam=1e-10, solver=solver, solver_tol=1e-8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # floor of attainable residual
            model.fit(d["R"][train], d["z"], d["E"][train].ravel(), d["F"][train])
        fits[solver] = model
    assert fits["iterative"].solve_result_.method.startswith("pcg[nystrom")
    assert fits["iterative"].solve_result_.residual < 1e-6
    _, F_exact = fits["exact"].predict(d["R"][test])
    _, F_iter = fits["iterative"].predict(d["R"][test])
    rel_rms = float(torch.sqrt(((F_iter - F_exact) ** 2).mean() / (F_exact**2).mean()))
    assert rel_rms <= 1e-5, rel_rms
    # and the model is a real fit, not a trivial one: its forces resemble the reference
    F_ref = torch.as_tensor(d["F"][test])
    assert float(torch.sqrt(((F_exact - F_ref) ** 2).mean() / (F_ref**2).mean())) < 0.5


def test_sgdml_nystrom_cuts_iterations_fivefold(ethanol_sgdml) -> None:
    _, _, _, op, b = ethanol_sgdml
    lam, tol = 1e-10, 1e-7
    pre = solve_iterative(op, b, lam, k=405, selection="pivoted_cholesky", group_size=27,
                          adaptive=False, tol=tol, progress=False)
    assert pre.converged
    budget = 5 * pre.iterations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        plain = solve_iterative(op, b, lam, preconditioner="none", tol=tol, max_iter=budget,
                                progress=False)
    assert not plain.converged, (pre.iterations, plain.iterations)  # needs > 5x the PCG count
