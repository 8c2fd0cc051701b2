"""Side by side: geopatra's sGDML against the reference sgdml 1.0.3, same frames, σ, λ, permutations.

Usage (from the repository root, with the project venv):

    .venv/bin/python -m experiments.sgdml_reference.compare --m 100 200 --sigma 40

For each M: a deterministic split of the bundled 42-atom GFN2-xTB set (training frames evenly
spaced, validation/test drawn from the rest with seed 0), the permutation group geopatra detects on
the training frames (passed to both sides), one fixed σ and λ. Each side trains and predicts in its
own subprocess, so its peak memory is its own ``ru_maxrss``:

- the reference (``run_reference.py side``, its own venv) with ``OPENBLAS_NUM_THREADS=1`` (its
  multithreaded Cholesky segfaults on this machine);
- geopatra with torch threads = 2 (BLAS/LAPACK default, 2 threads), and with 1 thread
  (``OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=MKL_NUM_THREADS=1``) for a like-for-like row.
  ``OMP_WAIT_POLICY=PASSIVE`` is set for geopatra: on this shared 2-core machine spinning OpenMP
  threads otherwise stall every small operation for a scheduler time slice.

Training time excludes symmetry detection on both sides (the permutations are given); it includes
descriptors, kernel assembly, Cholesky and the integration constant. Results go to
``experiments/work/compare_*.json`` and, summarised, to ``--out``.md/.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "experiments" / "work"
LAMBDA = 1e-10


def split_indices(n: int, m: int, n_valid: int, n_test: int) -> dict[str, np.ndarray]:
    """Deterministic disjoint split: train evenly spaced, valid/test from the rest (seed 0)."""
    train = np.unique(np.linspace(0, n - 1, m).round().astype(int))
    rest = np.random.default_rng(0).permutation(np.setdiff1d(np.arange(n), train))
    return {"train": train, "valid": np.sort(rest[:n_valid]), "test": np.sort(rest[n_valid : n_valid + n_test])}


def geopatra_side(split_file: Path, out: Path, solver: str = "exact", device: str | None = None) -> None:
    """Train and evaluate geopatra's SGDML on the split in ``split_file`` with ``solver`` ("exact" or
    "iterative") on ``device`` (default CPU); JSON to ``out``. On CUDA, ``peak_gpu_gb`` is
    ``torch.cuda.max_memory_allocated``."""
    import torch

    from geopatra.models.sgdml import SGDML, SGDMLKernel

    d = np.load(split_file)
    R, z, E, F = d["R"], d["z"], d["E"].reshape(-1), d["F"]
    tr, te = d["train"], d["test"]
    timings = {"assembly": 0.0}
    original = SGDMLKernel.fill_dense

    def timed_fill(self, *args, **kwargs):
        start = time.perf_counter()
        original(self, *args, **kwargs)
        timings["assembly"] += time.perf_counter() - start

    SGDMLKernel.fill_dense = timed_fill
    model = SGDML(sigmas=[float(d["sigma"])], lam=float(d["lam"]), permutations=d["perms"].tolist(),
                  solver=solver, memory_budget_gb=40.0 if device and device.startswith("cuda") else 16.0,
                  device=device)
    t0 = time.perf_counter()
    model.fit(R[tr], z, E[tr], F[tr])
    t_train = time.perf_counter() - t0
    model.predict(R[te[:10]])  # warm-up
    t1 = time.perf_counter()
    Et, Ft = model.predict(R[te])
    Et, Ft = Et.cpu(), Ft.cpu()
    t_pred = time.perf_counter() - t1
    res = {
        "side": "geopatra",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "M": int(len(tr)),
        "train_seconds": t_train,
        "assembly_seconds": timings["assembly"],
        "solve_seconds": t_train - timings["assembly"],
        "solver": model.solve_result_.method,
        "iterations": model.solve_result_.iterations,
        "residual": model.solve_result_.residual,
        "device": str(model.compute_device),
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "test_F_mae": float(np.abs(Ft.numpy() - F[te]).mean()),
        "test_E_mae": float(np.abs(Et.numpy() - E[te]).mean()),
        "predict_geometries_per_s": len(te) / t_pred,
    }
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res), flush=True)


def run_side(kind: str, split_file: Path, out: Path, threads: int | None = None, solver: str = "exact",
             device: str | None = None) -> dict:
    """Run one side in its own subprocess and return its JSON (``solver``, ``device``: geopatra only)."""
    env = dict(os.environ)
    if kind == "sgdml":
        env["OPENBLAS_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "experiments.sgdml_reference.run_reference", "side", "--split", str(split_file),
               "--out", str(out)]
    else:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        if threads == 1:
            env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "experiments.sgdml_reference.compare", "side", "--split", str(split_file),
               "--out", str(out),
               "--threads", str(threads), "--solver", solver, *(["--device", device] if device else [])]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return json.loads(out.read_text())


def write_report(rows: list[dict], args: argparse.Namespace, info: dict) -> None:
    """Markdown table and bar chart of the time ratios (reference / geopatra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        "# sGDML: geopatra vs the reference sgdml 1.0.3, side by side",
        "",
        f"Date: {info['date']}. Machine: {info['machine']} (2-core CPU, shared with other jobs; no GPU), "
        f"{info['ram_gb']:.0f} GB RAM. Versions: geopatra torch {info['torch']}, reference sgdml "
        f"{info['sgdml']} (numpy {info['numpy_ref']}).",
        "",
        f"Command: `.venv/bin/python -m experiments.sgdml_reference.compare {' '.join(sys.argv[1:])}`",
        "",
        f"Data: `{args.data}` ({info['n_frames']} frames, {info['n_atoms']} atoms); training frames "
        f"evenly spaced, {args.n_test} test frames from the rest (seed 0), the same for both sides. "
        f"σ = {args.sigma:g} (fixed), λ = {LAMBDA:g}, {info['n_perms']} permutation(s) "
        f"({'geopatra detection on the training frames' if args.perms == 'detect' else 'identity only'}, "
        "passed to both). Float64 everywhere. Training = descriptors "
        "+ kernel assembly + Cholesky + integration constant (symmetry detection excluded on both "
        "sides). Peak memory = ru_maxrss of each side's own subprocess. The reference runs with "
        "OPENBLAS_NUM_THREADS=1 (its multithreaded Cholesky segfaults here); geopatra with torch "
        "threads = 2 (LAPACK 2 threads) and = 1 (all BLAS/OpenMP pools 1 thread), "
        "OMP_WAIT_POLICY=PASSIVE.",
        "",
        "| M | side | threads | train [s] | assembly [s] | Cholesky etc. [s] | peak RSS [GB] | "
        "test F MAE [kcal/mol/Å] | test E MAE [kcal/mol] | prediction [geometries/s] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['M']} | {r['side']} | {r['threads']} | {r['train_seconds']:.1f} | "
            f"{r['assembly_seconds']:.1f} | {r['solve_seconds']:.1f} | {r['peak_rss_gb']:.2f} | "
            f"{r['test_F_mae']:.4f} | {r['test_E_mae']:.4f} | {r['predict_geometries_per_s']:.0f} |"
        )
    lines += ["", "Ratios (reference / geopatra; > 1 means geopatra is faster or smaller), same run:", "",
              "| M | geopatra threads | training speed-up | assembly speed-up | prediction speed-up | "
              "peak memory ratio | F MAE geopatra / reference |", "|---|---|---|---|---|---|---|"]
    ratios = []
    for m in args.m:
        ref = next(r for r in rows if r["M"] == m and r["side"] == "sgdml")
        for r in (r for r in rows if r["M"] == m and r["side"] == "geopatra"):
            q = {
                "M": m, "threads": r["threads"],
                "train": ref["train_seconds"] / r["train_seconds"],
                "assembly": ref["assembly_seconds"] / r["assembly_seconds"],
                "predict": r["predict_geometries_per_s"] / ref["predict_geometries_per_s"],
                "memory": ref["peak_rss_gb"] / r["peak_rss_gb"],
                "mae": r["test_F_mae"] / ref["test_F_mae"],
            }
            ratios.append(q)
            lines.append(f"| {m} | {q['threads']} | {q['train']:.2f}x | {q['assembly']:.2f}x | "
                         f"{q['predict']:.2f}x | {q['memory']:.2f}x | {q['mae']:.4f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = ["train", "assembly", "predict"]
    width = 0.8 / len(ratios)
    for k, q in enumerate(ratios):
        ax.bar(np.arange(len(names)) + k * width, [q[n] for n in names], width,
               label=f"M = {q['M']}, geopatra {q['threads']} thread(s)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(2.0, color="gray", ls="--", lw=0.8)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, ["training", "kernel assembly", "prediction"])
    ax.set_ylabel("speed-up over sgdml 1.0.3")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("sGDML, 42 atoms, same frames/σ/λ/permutations")
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode")
    one = sub.add_parser("side")
    one.add_argument("--split", type=Path, required=True)
    one.add_argument("--out", type=Path, required=True)
    one.add_argument("--threads", type=int, default=2)
    one.add_argument("--solver", choices=["exact", "iterative"], default="exact")
    one.add_argument("--device", default=None, help="torch device of the geopatra side (default CPU)")
    parser.add_argument("--data", default="bundled", help="dataset (read_dataset): path or 'bundled'")
    parser.add_argument("--m", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--sigma", type=float, default=40.0)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "sgdml_vs_reference"))
    parser.add_argument("--perms", choices=["detect", "identity"], default="detect",
                        help="geopatra's symmetry detection on the training frames, or the identity only")
    parser.add_argument("--tag", default="", help="suffix of the work files (several configurations)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite the report from the JSONs already in experiments/work")
    args = parser.parse_args()
    if args.mode == "side":
        import torch

        torch.set_num_threads(args.threads)
        geopatra_side(args.split, args.out, args.solver, args.device)
        return
    from experiments.bench_data import write_side_frames
    from geopatra.data import read_dataset
    from geopatra.models.sgdml import find_permutations

    data = read_dataset(args.data)
    R, z, E = (np.asarray(a) for a in (data.R, data.z, data.E))
    WORK.mkdir(parents=True, exist_ok=True)
    rows, n_perms = [], 0
    if args.report_only:
        for m in args.m:
            names = [f"compare_sgdml_{m}{args.tag}.json", f"compare_geopatra_{m}_t2{args.tag}.json",
                     f"compare_geopatra_{m}_t1{args.tag}.json"]
            rows += [json.loads((WORK / f).read_text()) for f in names if (WORK / f).exists()]
            n_perms = len(np.load(WORK / f"compare_split_{m}{args.tag}.npz")["perms"])
        args.m = [m for m in args.m if any(r["M"] == m and r["side"] == "sgdml" for r in rows)]
    for m in [] if args.report_only else args.m:
        split = split_indices(len(E), m, 0, args.n_test)
        if args.perms == "detect":
            perms = find_permutations(R[split["train"]], z)
        else:
            perms = np.arange(len(z))[None]
        n_perms = len(perms)
        split_file = WORK / f"compare_split_{m}{args.tag}.npz"
        write_side_frames(split_file, data, {"train": split["train"], "test": split["test"]},
                          sigma=args.sigma, lam=LAMBDA, perms=perms)
        rows.append(run_side("sgdml", split_file, WORK / f"compare_sgdml_{m}{args.tag}.json"))
        for threads in (2, 1):
            out = WORK / f"compare_geopatra_{m}_t{threads}{args.tag}.json"
            rows.append(run_side("geopatra", split_file, out, threads))
    import torch

    ref = next(r for r in rows if r["side"] == "sgdml")
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.processor() or platform.machine(),
        "ram_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "torch": torch.__version__, "sgdml": ref["version"], "numpy_ref": ref["numpy"],
        "n_frames": len(E), "n_perms": n_perms, "n_atoms": len(z),
    }
    write_report(rows, args, info)


if __name__ == "__main__":
    main()
