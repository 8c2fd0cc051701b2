"""Issue 4, target 1 as run on 2026-11-25 (scratch script kept for reproducibility; see
experiments/results/sgdml_iterative.md).

Usage: NT=1 python -m experiments.sgdml_iterative_vs_exact M SIGMAS LAMS TOL BUDGET
"""

import json
import sys
import time
import warnings

import numpy as np
import torch

torch.set_num_threads(int(__import__("os").environ.get("NT", "1")))
warnings.simplefilter("ignore")
from geopatra.models.sgdml.descriptor import descriptor, pair_gradients, vjp  # noqa: E402 (after the warning filter)
from geopatra.models.sgdml.kernel import SGDMLKernel  # noqa: E402
from geopatra.solvers.pcg import solve_iterative  # noqa: E402

d = np.load("geopatra/data/bundled/ac_ala3_nhme_gfn2xtb.npz")
M = int(sys.argv[1])
sigmas = [float(s) for s in sys.argv[2].split(",")]
lams = [float(s) for s in sys.argv[3].split(",")]
tol = float(sys.argv[4])
budget = int(sys.argv[5])
rng = np.random.default_rng(0)
idx = np.linspace(0, 1999, M).round().astype(int)
rest = np.setdiff1d(np.arange(2000), idx)
rng.shuffle(rest)
val, test = rest[:100], rest[100:300]
R = torch.tensor(d["R"][idx])
F = torch.tensor(d["F"][idx])
b = F.reshape(-1)
Rv, Fv, Rt, Ft = (torch.tensor(d[k][i]) for k, i in [("R", val), ("F", val), ("R", test), ("F", test)])


def pred(op, x, Rq):
    w, q = op.weights(x)
    return vjp(pair_gradients(Rq), op.descriptor_forces(descriptor(Rq), w, q))


base = SGDMLKernel.of(R, torch.arange(42)[None], sigmas[0])
for sigma in sigmas:
    op = base.with_sigma(sigma)
    K = torch.empty(op.n, op.n, dtype=torch.float64)
    op.fill_dense(K)
    for lam in lams:
        A = K.clone()
        A.diagonal().add_(lam)
        t = time.perf_counter()
        L = torch.linalg.cholesky(A)
        x_ex = torch.cholesky_solve(b[:, None], L)[:, 0]
        tex = time.perf_counter() - t
        del A, L
        Fex = pred(op, x_ex, Rt)
        row = dict(
            M=M,
            sigma=sigma,
            lam=lam,
            tol=tol,
            t_exact=tex,
            val_mae=float((pred(op, x_ex, Rv) - Fv).abs().mean()),
            test_mae=float((Fex - Ft).abs().mean()),
        )
        best = budget
        for pre, frames in [("nystrom", M // 2), ("nystrom", M // 4), ("none", 0)]:
            mi = budget if pre == "nystrom" else min(budget, 5 * best)
            r = solve_iterative(
                op,
                b,
                lam,
                tol=tol,
                max_iter=mi,
                preconditioner=pre,
                k=max(1, frames * 126),
                selection="pivoted_cholesky",
                group_size=126,
                adaptive=False,
                progress=False,
            )
            if pre == "nystrom" and r.converged:
                best = min(best, r.iterations)
            Fit = pred(op, r.x, Rt)
            rr = float(((Fit - Fex).pow(2).mean() / Fex.pow(2).mean()).sqrt())
            row[f"{pre}{frames}"] = dict(
                it=r.iterations, conv=r.converged, res=r.residual, t=round(r.seconds, 1), relrms=rr
            )
            print(json.dumps(row), flush=True)
        print(json.dumps(row), flush=True)
