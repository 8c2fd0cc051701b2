"""The cost of one matrix-free sGDML kernel product ``K v`` against the number of permutations kept.

    python -m experiments.sgdml_product --label after             # M = 200 and 1000, S = 1, 3, 9, 27
    python -m experiments.sgdml_product --report

One PCG iteration of the iterative solver is one product, so its time with S permutations against
the identity's is what a symmetric model costs to train. Bundled Ac-Ala3-NHMe (42 atoms), the first
M frames, the groups ``pricing.candidate_groups`` offers (greedy subgroups of its 243-element methyl
group), one torch thread, median of ``--repeats`` after one untimed product. ``--label`` names the
code measured (rows of several labels, e.g. before and after a change of the product, share one
report). Rows in ``experiments/results/sgdml_product/``; report
``experiments/results/sgdml_product.{md,png,json}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from experiments import bench_data, layout, reporting

STUDY = "sgdml_product"


def measure(m: int, perms: np.ndarray, repeats: int) -> list[float]:
    """Seconds of ``repeats`` products ``K v`` on the first ``m`` bundled frames under ``perms``."""
    import torch

    from geopatra.data import read_dataset
    from geopatra.models.sgdml import SGDMLKernel

    R = torch.as_tensor(read_dataset(bench_data.DATASETS["ala3"].path).R[:m])
    build = getattr(SGDMLKernel, "of", SGDMLKernel)  # before commit 30f633e's successor: SGDMLKernel(R, perms, σ)
    op = build(R, torch.as_tensor(perms), 20.0)
    v = torch.randn(op.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op.matvec(v)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        op.matvec(v)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="current", help="name of the code measured, e.g. before / after")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000], help="training frames M")
    parser.add_argument("--max-perms", type=int, default=27, help="largest group measured")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the rows")
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()
    rows_dir = args.results_dir / STUDY
    if not args.report:
        import torch

        from geopatra.data import read_dataset
        from geopatra.models.sgdml import find_permutations
        from geopatra.models.sgdml.pricing import candidate_groups

        torch.set_num_threads(1)
        ds = read_dataset(bench_data.DATASETS["ala3"].path)
        group = find_permutations(ds.R[::10], ds.z)  # 200 frames spread over the trajectory: all 243
        groups = [g for g in candidate_groups(group) if len(g) <= args.max_perms]
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=layout.ROOT).stdout.strip()
        for m in args.sizes:
            for perms in groups:
                times = measure(m, perms, args.repeats)
                row = {"label": args.label, "commit": commit, "M": m, "S": len(perms), "seconds": times,
                       "median_s": float(np.median(times)), "threads": 1}
                rows_dir.mkdir(parents=True, exist_ok=True)
                (rows_dir / f"{args.label}_M{m}_S{len(perms)}.json").write_text(json.dumps(row, indent=1))
                print(f"{args.label} M={m} S={len(perms)}: {row['median_s']:.3f} s", flush=True)
    print(write_report(rows_dir, args.results_dir))


def write_report(rows_dir: Path, results: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    identity = {(r["label"], r["M"]): r["median_s"] for r in rows if r["S"] == 1}
    table = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label in sorted({r["label"] for r in rows}):
        for m in sorted({r["M"] for r in rows if r["label"] == label}):
            sel = sorted((r for r in rows if r["label"] == label and r["M"] == m), key=lambda r: r["S"])
            base = identity.get((label, m))
            for r in sel:
                ratio = r["median_s"] / base if base else float("nan")
                table.append([label, r["commit"], m, r["S"], f"{r['median_s']:.3f}", f"{ratio:.1f}"])
            if base:
                ax.plot([r["S"] for r in sel], [r["median_s"] / base for r in sel], "o-", label=f"{label}, M = {m}")
    ax.plot([1, 27], [1, 27], "k:", lw=0.8, label="proportional to S")
    ax.axhline(10, color="grey", ls="--", lw=0.8, label="target at S = 27: 10×")
    ax.set(xscale="log", yscale="log", xlabel="permutations S", ylabel="time of K v / identity's")
    ax.legend(fontsize=7)
    fig.tight_layout()
    body = ["One matrix-free product `K v` of the sGDML kernel (`SGDMLKernel.matvec`) on the first M bundled "
            "Ac-Ala3-NHMe frames (42 atoms, D = 861 descriptor entries), one torch thread, median of the "
            "repeats after one untimed product; S permutations from `pricing.candidate_groups` (greedy "
            "subgroups of the detected 243-element methyl group). Ratio: against the identity (S = 1) of the "
            "same label and M. Labels name the code measured (its commit in the table); each label's rows ran "
            "alone, pinned to one core (`taskset -c 1`), nothing else running. `before` ran from a git worktree "
            "of its commit with this script copied in (`PYTHONPATH` set to the worktree).", "",
            *reporting.table(["label", "commit", "M", "S", "K v [s]", "ratio to S = 1"], table)]
    return reporting.write_report(STUDY, None, results, "cpu", "sGDML: the cost of a symmetric kernel product", body,
                           rows, fig)


if __name__ == "__main__":
    main()
