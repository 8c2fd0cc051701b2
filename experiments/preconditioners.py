"""Nyström-preconditioned CG on sGDML kernels: CG iterations and time versus k and selection method.

Solves ``(K + λI) α = F`` for the sGDML force kernel (:class:`geopatra.models.sgdml.SGDMLKernel`)
with :func:`geopatra.solvers.pcg.solve_iterative` for k in a grid (whole training geometries, 3N
columns each) and each inducing-column selection (random, leverage, pivoted_cholesky), plus plain
CG, one adaptive run, and the exact Cholesky solve as reference where it fits; on ethanol (MD17)
and, if present, the bundled 42-atom Ac-Ala3-NHMe GFN2-xTB set. The k grid is 1/16, 1/8, 1/4
and 1/2 of the training geometries. Writes
``experiments/results/preconditioners.md``, ``.png`` and ``.json`` (rows for the summary).

    python -m experiments.preconditioners --fast     # minutes on 2 cores (part of `make bench`)
    python -m experiments.preconditioners            # ethanol M=200, Ac-Ala3-NHMe M=100 (longer)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from experiments.bench_data import index_digest
from experiments.provenance import device_description, provenance_lines
from geopatra.solvers.operator import KernelOperator
from geopatra.solvers.pcg import solve_iterative

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("random", "leverage", "pivoted_cholesky")
log = logging.getLogger("preconditioners")


@dataclass
class Problem:
    name: str
    operator: KernelOperator
    b: torch.Tensor
    lam: float
    group_size: int  # columns per training geometry (3N): selection picks whole geometries
    ks: list[int]
    note: str
    frames: str  # which frames: file, count, seed and sha256 of the indices


@dataclass
class Row:
    problem: str
    method: str
    k: int | str
    iterations: int
    converged: bool
    residual: float
    seconds: float
    error: float | None  # relative error of x against the Cholesky solve, when run


# ------------------------------------------------------------------------------ problems ----


@dataclass(frozen=True)
class Molecule:
    """A dataset and the kernel hyperparameters its problem is solved at."""

    name: str
    path: Path
    sigma: float  # Matérn length scale of the inverse-distance descriptor [1/Å]
    lam: float  # ridge λ
    why: str


MOLECULES = (
    Molecule("ethanol (MD17 DFT)", ROOT / "tests/data/md17_ethanol_2000.npz", 20.0, 1e-10,
             "sGDML's default λ, σ in the range its cross-validation picks for ethanol"),
    Molecule("Ac-Ala3-NHMe (GFN2-xTB, bundled)", ROOT / "geopatra/data/bundled/ac_ala3_nhme_gfn2xtb.npz", 40.0, 1e-8,
             "configs/sgdml.yaml: the σ its search chose at M = 1,000 and the λ of its iterative solve; "
             "at σ = 20, λ = 1e-10 no preconditioner up to k = n/2 converged in 600 iterations"),
)


def _load(molecule: Molecule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R [M, N, 3] Å, z [N], F [M, N, 3] kcal/mol/Å."""
    d = np.load(molecule.path)
    return d["R"], d["z"], d["F"]


def _pick(M_total: int, M: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(M_total, size=min(M, M_total), replace=False))


def build_problems(
    sizes: list[int], fractions: list[float], lam: float | None, sigma: float | None
) -> list[Problem]:
    """sGDML problems on ``sizes[i]`` training frames of each molecule at its own σ and λ (or the
    given ones); k grid = ``fractions`` of the training frames (whole geometries, at least one)."""
    from geopatra.models.sgdml import SGDMLKernel, find_permutations

    problems = []
    for molecule, M in zip(MOLECULES, sizes):
        if not molecule.path.exists():
            log.warning("%s not found: skipping %s", molecule.path, molecule.name)
            continue
        R, z, F = _load(molecule)
        name = molecule.name
        sigma_m = molecule.sigma if sigma is None else sigma
        lam_m = molecule.lam if lam is None else lam
        why = molecule.why if (sigma, lam) == (None, None) else "given on the command line"
        idx = _pick(len(R), M)
        perms = find_permutations(R[idx], z, max_geometries=min(len(idx), 50))
        op = SGDMLKernel.of(torch.as_tensor(R[idx], dtype=torch.float64), torch.as_tensor(perms), sigma_m)
        b = torch.as_tensor(F[idx], dtype=torch.float64).reshape(-1)
        d = 3 * len(z)
        frames = sorted({max(1, round(f * len(idx))) for f in fractions})
        which = f"{len(idx)} of `{molecule.path.relative_to(ROOT)}` drawn with seed 0 (sha256 {index_digest(idx)})"
        problems.append(Problem(
            f"{name}, M={len(idx)}", op, b, lam_m, d, [f * d for f in frames],
            f"sGDML force kernel (Matérn-5/2, σ={sigma_m:g}, λ={lam_m:g} ({why}), {len(perms)} permutations), "
            f"n = 3NM = {op.n} unknowns, k = whole geometries x {d} columns, b = training forces; frames: {which}",
            which,
        ))
    return problems


# ---------------------------------------------------------------------------------- runs ----


def run(problem: Problem, tol: float, max_iter: int, exact_max_n: int) -> list[Row]:
    from geopatra.solvers.cholesky import solve_cholesky

    op, b, lam = problem.operator, problem.b, problem.lam
    x_ref = None
    if op.n <= exact_max_n:
        ref = solve_cholesky(op, b, lam, memory_budget_gb=16.0, progress=False)
        x_ref = ref.x
        log.info("%s | Cholesky: %.1f s, residual %.1e", problem.name, ref.seconds, ref.residual)
        K = op.columns(torch.arange(op.n))
        ev = torch.linalg.eigvalsh(0.5 * (K + K.T)).clamp_min(0.0)
        del K
        d_eff = float((ev / (ev + lam)).sum())
        problem.note += (f"; spectrum of K: largest {float(ev[-1]):.2e}, median "
                         f"{float(ev.median()):.2e}; effective dimension tr(K(K+λI)⁻¹) = "
                         f"{d_eff:.0f} of {op.n}")

    def err(x: torch.Tensor) -> float | None:
        return None if x_ref is None else float((x - x_ref).norm() / x_ref.norm())

    rows = []
    if x_ref is not None:
        rows.append(Row(problem.name, "Cholesky (exact)", "-", 0, True, ref.residual, ref.seconds, 0.0))
    common = {"tol": tol, "max_iter": max_iter, "progress": False, "group_size": problem.group_size}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = solve_iterative(op, b, lam, preconditioner="none", **common)
        rows.append(Row(problem.name, "plain CG", "-", res.iterations, res.converged,
                        res.residual, res.seconds, err(res.x)))
        log.info("%s | plain CG: %d it, %.1f s", problem.name, res.iterations, res.seconds)
        for method in METHODS:
            for k in problem.ks:
                res = solve_iterative(op, b, lam, k=k, selection=method, adaptive=False, **common)
                rows.append(Row(problem.name, method, k, res.iterations, res.converged,
                                res.residual, res.seconds, err(res.x)))
                log.info("%s | %s k=%d: %d it, %.1f s", problem.name, method, k, res.iterations,
                         res.seconds)
        ks = problem.ks
        res = solve_iterative(op, b, lam, k=ks[0], selection="leverage", adaptive=True,
                              k_max=ks[-1], **common)
        k_end = res.method.split("k=")[1].rstrip("]")
        rows.append(Row(problem.name, "leverage, adaptive", f"{ks[0]}→{k_end}", res.iterations,
                        res.converged, res.residual, res.seconds, err(res.x)))
    return rows


# ------------------------------------------------------------------------------- outputs ----


def table(rows: list[Row]) -> str:
    lines = [
        ("| problem | method | k | CG iterations | converged | rel. residual | time [s] "
         "| rel. error vs dense |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        it = f"{r.iterations}" if r.converged else f">{r.iterations}"
        e = "-" if r.error is None else f"{r.error:.1e}"
        lines.append(f"| {r.problem} | {r.method} | {r.k} | {it} | {r.converged} | "
                     f"{r.residual:.1e} | {r.seconds:.2f} | {e} |")
    return "\n".join(lines)


def plot(rows: list[Row], problems: list[Problem], path: Path, max_iter: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, axes = plt.subplots(1, len(problems), figsize=(5.5 * len(problems), 4.2), squeeze=False)
    for ax, prob in zip(axes[0], problems):
        mine = [r for r in rows if r.problem == prob.name]
        for method, marker in zip(METHODS, "osd"):
            pts = [r for r in mine if r.method == method]
            ax.plot([r.k for r in pts], [r.iterations for r in pts], marker=marker, label=method)
            bad = [r for r in pts if not r.converged]
            ax.plot([r.k for r in bad], [r.iterations for r in bad], "x", color="k", ms=9)
        plain = next(r for r in mine if r.method == "plain CG")
        label = f"plain CG ({'' if plain.converged else '> '}{plain.iterations})"
        ax.axhline(plain.iterations, ls="--", color="gray", label=label)
        ax.set(xscale="log", yscale="log", xlabel="inducing columns k", ylabel="CG iterations",
               title=prob.name, ylim=(1, 2 * max_iter))
        ax.set_xticks(prob.ks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle(f"PCG iterations to the tolerance (x: not converged; budget {max_iter})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _iterations(r: Row) -> str:
    return f"{r.iterations} iterations" if r.converged else f"not converged in {r.iterations} iterations"


def observations(rows: list[Row], problems: list[Problem]) -> list[str]:
    """What the table says, one bullet per problem, computed from the rows of this run."""
    out = []
    for p in problems:
        mine = [r for r in rows if r.problem == p.name]
        plain = next(r for r in mine if r.method == "plain CG")
        parts = [f"plain CG: {_iterations(plain)}"]
        for method in METHODS:
            ok = [r for r in mine if r.method == method and r.converged]
            if ok:
                first = min(ok, key=lambda r: r.k)
                parts.append(f"{method} converges from k = {first.k} ({first.iterations} iterations)")
            else:
                parts.append(f"{method} does not converge at any k ≤ {p.ks[-1]}")
        at_max = [r for r in mine if r.method in METHODS and r.k == p.ks[-1]]
        best = min(at_max, key=lambda r: (not r.converged, r.iterations))
        parts.append(f"fewest iterations at k = {p.ks[-1]}: {best.method} ({_iterations(best)})")
        exact = next((r for r in mine if r.method == "Cholesky (exact)"), None)
        fastest = min((r for r in mine if r.converged and r is not exact), key=lambda r: r.seconds, default=None)
        if fastest is not None:
            versus = f", against {exact.seconds:.2f} s for Cholesky" if exact else ""
            parts.append(f"fastest PCG solve: {fastest.method} at k = {fastest.k} "
                         f"({fastest.seconds:.2f} s{versus})")
        out.append(f"- **{p.name}**: " + "; ".join(parts) + ".")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="smaller problems (minutes on 2 cores)")
    ap.add_argument("--tol", type=float, default=1e-6, help="relative residual tolerance")
    ap.add_argument("--lam", type=float, default=None, help="ridge λ for every problem (default: per molecule)")
    ap.add_argument("--sigma", type=float, default=None,
                    help="Matérn length scale [1/Å] for every problem (default: per molecule)")
    ap.add_argument("--max-iter", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments/results/preconditioners")
    args = ap.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("geopatra").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    fractions = [1 / 16, 1 / 8, 1 / 4, 1 / 2]
    if args.fast:
        sizes, max_iter, exact_max_n = [50, 20], 600, 3000
    else:
        sizes, max_iter, exact_max_n = [200, 100], 3000, 13000
    max_iter = args.max_iter or max_iter
    t0 = time.perf_counter()
    problems = build_problems(sizes, fractions, args.lam, args.sigma)
    rows = [row for p in problems for row in run(p, args.tol, max_iter, exact_max_n)]
    text = table(rows)
    sys.stdout.write(text + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, problems, args.out.with_suffix(".png"), max_iter)
    command = "python -m experiments.preconditioners " + " ".join(argv)
    header = [
        "# Nyström-preconditioned CG on the sGDML kernel: iterations versus k and selection", "",
        *provenance_lines("cpu", command.strip()),
        (f"Settings: tol={args.tol:g} (relative residual), max_iter={max_iter}, seed 0, training frames "
         f"drawn with seed 0; total run time {time.perf_counter() - t0:.0f} s"), "",
        "Problems:", *[f"- **{p.name}**: {p.note}" for p in problems], "",
        ("Time includes building the preconditioner (kernel columns + factorisations). "
         "`>N`: not converged within the budget. Error: relative difference of x to the "
         "Cholesky solution. A Nyström preconditioner of rank k helps when k is comparable to "
         "the effective dimension; the rest of the spectrum above λ sets the PCG iteration "
         "count."),
        "",
        text, "", "![iterations versus k](preconditioners.png)", "",
        "## Observations (generated from the table above)", "",
        *observations(rows, problems), "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(header))
    args.out.with_suffix(".json").write_text(json.dumps({
        "study": "preconditioners", "mode": "fast" if args.fast else "full", "device": device_description("cpu"),
        "problems": [{"name": p.name, "frames": p.frames, "note": p.note} for p in problems],
        "rows": [asdict(r) for r in rows],
    }, indent=1))


if __name__ == "__main__":
    main()
