"""The sGDML kernel and its iterative solve shared by 2 CPU processes (gloo): the same products, the same
solution and the same fitted model as in one process, on every rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_sgdml import ETHANOL_GROUP

from geopatra.models.sgdml import SGDML, SGDMLKernel
from geopatra.models.sgdml.distributed import DistributedKernel, is_distributed
from geopatra.solvers.pcg import solve_iterative

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent / "data" / "md17_ethanol_2000.npz"
FRAMES = np.arange(0, 420, 20)  # 21 frames: 10 on one rank, 11 on the other
SIGMA, LAM = 20.0, 1e-6
SOLVE = {"tol": 1e-10, "k": 54, "progress": False}
FIT = {"sigmas": [SIGMA], "lam": LAM, "solver": "iterative", "solver_tol": 1e-10, "solver_k": 54}


def problem() -> tuple[SGDMLKernel, torch.Tensor, torch.Tensor, torch.Tensor, tuple]:
    """The kernel of 21 ethanol frames with its 6 permutations, a vector, columns and the fit data."""
    data = np.load(DATA)
    op = SGDMLKernel.of(torch.as_tensor(data["R"][FRAMES]), torch.tensor(ETHANOL_GROUP), SIGMA)
    v = torch.randn(op.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    idx = torch.tensor([3, 250, 100, 566, 27])
    fit_args = (data["R"][FRAMES], data["z"], data["E"][FRAMES], data["F"][FRAMES])
    return op, v, idx, torch.as_tensor(data["F"][FRAMES]).reshape(-1), fit_args


def results(op, v: torch.Tensor, idx: torch.Tensor, b: torch.Tensor, fit_args: tuple) -> dict:
    solve = solve_iterative(op, b, LAM, **SOLVE)
    model = SGDML(**FIT).fit(*fit_args)
    return {"matvec": op.matvec(v), "matmat": op.matvec(torch.stack([v, 2 * v], 1)), "columns": op.columns(idx),
            "diagonal": op.diagonal(), "x": solve.x, "iterations": solve.iterations,
            "alphas": model.alphas.detach().clone(), "distributed": is_distributed()}


def worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        op, v, idx, b, fit_args = problem()
        torch.save(results(DistributedKernel(op), v, idx, b, fit_args), Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_solve_what_one_solves(tmp_path: Path) -> None:
    mp.spawn(worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    op, v, idx, b, fit_args = problem()
    one = results(op, v, idx, b, fit_args)
    assert not one["distributed"] and all(r["distributed"] for r in ranks)
    for key in ("matvec", "matmat", "columns", "diagonal", "x", "alphas"):
        torch.testing.assert_close(ranks[0][key], ranks[1][key], rtol=0, atol=0)  # lockstep: identical
        scale = float(one[key].abs().max())
        torch.testing.assert_close(ranks[0][key], one[key], rtol=1e-10, atol=1e-10 * scale)
    assert ranks[0]["iterations"] == one["iterations"]


def test_the_rows_of_a_product_are_the_product_s_rows() -> None:
    op, v, idx, _, _ = problem()
    d = 3 * op.n_atoms
    whole, columns = op.matmat(v[:, None]), op.columns(idx)
    for rows in (slice(0, 10), slice(10, 21), slice(5, 5)):
        torch.testing.assert_close(op.matmat(v[:, None], rows=rows), whole[rows.start * d : rows.stop * d],
                                   rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(op.columns(idx, rows=rows), columns[rows.start * d : rows.stop * d],
                                   rtol=1e-12, atol=1e-14)
