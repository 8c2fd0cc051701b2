"""Training cost: sGDML wall time and peak memory vs M (exact, iterative, reference); neural models'
time to reach a validation force MAE.

    nice python -m experiments.training_cost --fast                # CPU, minutes
    python -m experiments.training_cost --full --device cuda       # GPU

Part 1, kernel solvers, side by side in one invocation: geopatra-sGDML with the exact (Cholesky) and
the iterative (Nyström-preconditioned CG, tol 1e-8) solver, and the reference sgdml 1.0.3 (exact,
its only solver; CPU, one BLAS thread: its multithreaded Cholesky segfaults on the 2-core machine),
on Ac-Ala3-NHMe at one σ = 40, λ = 1e-8 (the well-conditioned setting of
``results/sgdml_iterative.md``) and the identity permutation on every side (what the reference's
own detection finds on these frames). Each run is its own subprocess: peak memory is its
``ru_maxrss`` (and ``torch.cuda.max_memory_allocated`` on a GPU). Training time = descriptors,
kernel assembly or CG, and the integration constant; no σ search.

Part 2, neural models: GeoPaTra and MACE runs of ``learning_curves.py`` (same plan, same split,
reused from its cache or trained here), and the wall time at which each first reaches a validation
force MAE target. Target per (dataset, M): the worse of the two models' best validation MAE, i.e.
the best accuracy both reach, so both have a time. Writes
``<results-dir>/training_cost[_full].{md,png,json}``.
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments import bench_data, environments, layout, reporting, runners
from experiments.learning_curves import PLANS as LC_PLANS

SIGMA, LAM = 40.0, 1e-8
#: Part 1 per mode: training sizes, and the largest M for the reference and the exact solver.
PLANS = {
    "fast": {"sizes": [20, 40, 80], "max_reference": 80, "max_exact": 80, "n_val": 20, "n_test": 100},
    "full": {"sizes": [50, 100, 200, 400, 800], "max_reference": 100, "max_exact": 400, "n_val": 20,
             "n_test": 200},
}


def kernel_rows(args: argparse.Namespace, notes: list[str]) -> list[dict]:
    plan = PLANS[args.mode]
    data = bench_data.DATASETS["ala3"]
    splits = bench_data.nested_splits(data, plan["sizes"], plan["n_val"], plan["n_test"], args.work_dir)
    identity = np.arange(42)[None]
    rows = []
    for m, split in splits.items():
        common = {"sigma": SIGMA, "lam": LAM, "work": args.work_dir, "mode": args.mode}
        if m <= plan["max_reference"]:
            row = environments.foreign(f"{layout.REFERENCE_SGDML}, M = {m}", notes, runners.run_reference, data,
                                       split, perms=identity,
                             **common)
            rows += [show(row)] if row else []
        for solver in ("exact", "iterative"):
            if solver == "exact" and m > plan["max_exact"]:
                continue
            rows.append(show(runners.run_sgdml_side(data, split, solver=solver, perms=identity, device=args.device,
                                               threads=args.threads, **common)))
    return rows


def show(row: dict) -> dict:
    print(f"M={row['M']:<5} {row['model']:<26} train {row['train_s']:8.1f} s  peak RSS {row['peak_rss_gb']:6.2f} GB"
          f"  test F MAE {row['test_F_mae']:.3f}{'  (cached)' if row.get('reused') else ''}", flush=True)
    return row


def neural_rows(args: argparse.Namespace, notes: list[str]) -> list[dict]:
    """Time-to-target rows, one per (dataset, M), from the learning-curve runs."""
    plan = LC_PLANS[args.mode]
    out = []
    for key in args.data:
        data = bench_data.DATASETS[key]
        splits = bench_data.nested_splits(data, plan["sizes"][key], plan["n_val"][key], plan["n_test"][key],
                                          args.work_dir)
        for m, split in splits.items():
            common = {"mode": args.mode, "work": args.work_dir, "device": args.device, "threads": args.threads,
                      "budget": plan["budget"]}
            runs = {layout.GEOPATRA_NN: runners.run_geopatra("geopatra", data, split, **common),
                    layout.MACE: environments.foreign(f"{layout.MACE}, {key}, M = {m}", notes, runners.run_mace, data,
                                                      split, **common)}
            best = {name: min(f for _, f in r["curve"]) for name, r in runs.items() if r and r["curve"]}
            if len(best) < 2:
                continue
            target = max(best.values())
            row = {"data": key, "M": m, "target": target, "split_file": runs[layout.MACE]["split_file"],
                   "train_sha": runs[layout.MACE]["train_sha"], "n_val": runs[layout.MACE]["n_val"]}
            for name, r in runs.items():
                row[name] = {"time_to_target_s": runners.time_to_reach(r["curve"], target), "best_val": best[name],
                             "total_s": r["curve"][-1][0], "steps": r["steps"], "device": r["device"],
                             "reused": bool(r.get("reused")), "run_dir": r["run_dir"]}
            print(f"{key:>8} M={m:<5} target {target:.3f}: " + ", ".join(
                f"{n} {row[n]['time_to_target_s']:.1f} s" for n in runs), flush=True)
            out.append(row)
    return out


def write(kernel: list[dict], neural: list[dict], notes: list[str], args: argparse.Namespace):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = PLANS[args.mode]
    body = ["## 1. sGDML training: exact, iterative and the reference", "",
            f"Data: {bench_data.DATASETS['ala3'].label}; σ = {SIGMA:g}, λ = {LAM:g}, identity permutation on "
            f"every side; test = {plan['n_test']} frames; runs finished {reporting.run_span(kernel)}. "
            "Training frames (nested, seed 0):"]
    for m in sorted({r["M"] for r in kernel}):
        r = next(r for r in kernel if r["M"] == m)
        body.append(f"- M = {m}: `{r['split_file']}` (train indices sha256 {r['train_sha']}…)")
    body += [""]
    body += reporting.table(
        ["M", "unknowns 3NM", "model / solver", "device", "train [s]", "peak RSS [GB]", "peak GPU [GB]",
         "CG iterations", "test F MAE [kcal/mol/Å]"],
        [[r["M"], f"{126 * r['M']:,}", r["model"], r["device"], reporting.fmt(r["train_s"]),
          reporting.fmt(r["peak_rss_gb"]),
          reporting.fmt(r.get("peak_gpu_gb")), r.get("iterations") if "iterative" in r["model"] else "—",
          reporting.fmt(r["test_F_mae"], 4)] for r in kernel],
    )
    ratios = []
    for m in sorted({r["M"] for r in kernel}):
        ref = next((r for r in kernel if r["M"] == m and r["model"] == layout.REFERENCE_SGDML), None)
        for r in (r for r in kernel if r["M"] == m and r["model"] != layout.REFERENCE_SGDML):
            if ref is not None:
                ratios.append([m, r["model"], f"{ref['train_s'] / r['train_s']:.2f}×",
                               f"{ref['peak_rss_gb'] / r['peak_rss_gb']:.2f}×",
                               f"{r['test_F_mae'] / ref['test_F_mae']:.4f}"])
    body += ["", "Ratios, reference / geopatra, same invocation (> 1: geopatra faster or smaller):", ""]
    body += reporting.table(["M", "geopatra solver", "training speed-up", "peak RSS ratio",
                             "F MAE geopatra / reference"],
                     ratios)
    body += ["", "## 2. Neural models: time to reach a validation force MAE", "",
             "Target per row: the worse of the two models' best validation force MAE (the best accuracy both "
             "reach); time = wall time from the start of the fit to the first validation at or below it "
             "(GeoPaTra: `val/elapsed_s` in its metrics.csv; MACE: its log's timestamps from 'Started training'). "
             "Same split files and step budget as `learning_curves`; 'reused' = the learning-curve run, measured "
             f"in that invocation. The 'best' columns are where each run ended: a target set by the weaker model "
             f"says how fast both get there, not how far the stronger one goes. Runs finished "
             f"{reporting.run_span([r[m] for r in neural for m in (layout.GEOPATRA_NN, layout.MACE)])}.", ""]
    body += reporting.table(
        ["data", "M", "target [kcal/mol/Å]", "GeoPaTra [s]", "MACE [s]", "MACE / GeoPaTra",
         "GeoPaTra best (run total)", "MACE best (run total)", "device", "reused"],
        [[r["data"], r["M"], reporting.fmt(r["target"]), reporting.fmt(r[layout.GEOPATRA_NN]["time_to_target_s"]),
          reporting.fmt(r[layout.MACE]["time_to_target_s"]),
          f"{r[layout.MACE]['time_to_target_s'] / r[layout.GEOPATRA_NN]['time_to_target_s']:.2f}×",
          f"{r[layout.GEOPATRA_NN]['best_val']:.3g} ({r[layout.GEOPATRA_NN]['total_s']:.0f} s)",
          f"{r[layout.MACE]['best_val']:.3g} ({r[layout.MACE]['total_s']:.0f} s)", r[layout.MACE]["device"],
          "yes" if r[layout.MACE]["reused"] else "no"] for r in neural],
    )
    machine = ("Every run is single-threaded; absolute times move with whatever else runs on the machine (the "
               "header's load average says how busy it was), so compare ratios. " if args.device == "cpu" else
               f"geopatra runs on {args.device}; the reference on the CPU with one BLAS thread. ")
    body += ["", *(f"- {n}" for n in notes), "",
             f"Notes: {machine}The reference's peak RSS includes its Python/NumPy/torch imports (about 0.3 GB)."]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for model in sorted({r["model"] for r in kernel}):
        sel = sorted((r for r in kernel if r["model"] == model), key=lambda r: r["M"])
        axes[0].loglog([r["M"] for r in sel], [r["train_s"] for r in sel], "o-", label=model)
        axes[1].loglog([r["M"] for r in sel], [r["peak_rss_gb"] for r in sel], "o-", label=model)
    axes[0].set(xlabel="training frames M", ylabel="training time [s]", title="sGDML training time")
    axes[1].set(xlabel="training frames M", ylabel="peak RSS [GB]", title="sGDML peak memory")
    for key in dict.fromkeys(r["data"] for r in neural):
        sel = sorted((r for r in neural if r["data"] == key), key=lambda r: r["M"])
        for name, style in ((layout.GEOPATRA_NN, "o-"), (layout.MACE, "s--")):
            axes[2].plot([r["M"] for r in sel], [r[name]["time_to_target_s"] for r in sel], style,
                         label=f"{name}, {key}")
    axes[2].set(xscale="log", yscale="log", xlabel="training frames M", ylabel="time to target [s]",
                title="neural: time to reach target val F MAE")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    fig.tight_layout()
    rows = [{"part": "kernel", **r} for r in kernel] + [{"part": "neural", **r} for r in neural]
    return reporting.write_report("training_cost", args.mode, args.results_dir, args.device,
                           "Training cost: sGDML solvers vs the reference, neural time to accuracy", body, rows, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    reporting.add_common_args(parser)
    parser.add_argument("--data", nargs="+", choices=sorted(bench_data.DATASETS), default=list(bench_data.DATASETS),
                        help="datasets of part 2")
    parser.add_argument("--parts", nargs="+", choices=["kernel", "neural"], default=["kernel", "neural"])
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    notes: list[str] = []
    kernel = kernel_rows(args, notes) if "kernel" in args.parts else []
    neural = neural_rows(args, notes) if "neural" in args.parts else []
    print(f"wrote {write(kernel, neural, notes, args)}")


if __name__ == "__main__":
    main()
