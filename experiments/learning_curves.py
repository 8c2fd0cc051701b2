"""Learning curves: test force and energy MAE vs training-set size, four models on identical frames.

    nice python -m experiments.learning_curves --fast                   # CPU, minutes
    python -m experiments.learning_curves --full --device cuda          # GPU; or split it up:
    python -m experiments.learning_curves --full --device cuda --data ethanol --models GeoPaTra MACE

Models: geopatra-sGDML (``configs/sgdml.yaml``: σ chosen from a grid on the validation frames, its own
permutation detection, exact solve), the reference sgdml 1.0.3 (in ``experiments/.venv-sgdml``, at
geopatra's chosen σ and λ, with its own ``find_perms`` on the training frames, as its users get it),
GeoPaTra (``configs/geopatra_demo.yaml`` sizes in --fast, ``configs/geopatra.yaml`` in --full) and
MACE (mace-torch in ``experiments/.venv-mace``; 32 channels in --fast, 128 in --full, r_max 5 Å).
The neural models train for the same number of optimizer steps (batch 8) at every size and are
tested at their best validation epoch.

Frames: per dataset one seeded permutation (seed 0) gives the validation and test frames, the same
for every size and model, and nested training sets (``bench_data.nested_splits``); the split
files are written under ``<work-dir>/splits`` and named in the report with digests of their indices.
Runs are cached in ``<work-dir>/runs/<mode>/``: a second invocation (other --data or --models)
adds to the same report. The --full plan (3 sizes per dataset, 800 neural steps) is what fits a GPU
session of about 30 device-minutes, in commands of under 6 minutes each (one dataset and either the
two kernel models or the two neural models per command). Writes ``<results-dir>/learning_curves[_full].{md,png,json}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments import bench_data, environments, layout, reporting, runners

#: Per mode: training sizes, validation and test frames per dataset, and the neural budget.
PLANS = {
    "fast": {
        "sizes": {"ala3": [50, 100], "ethanol": [50, 100, 200]},
        "n_val": {"ala3": 20, "ethanol": 20},
        "n_test": {"ala3": 200, "ethanol": 200},
        "budget": runners.NeuralBudget(steps=150),
    },
    # Sized for a GPU session of about 30 device-minutes in all (see the module docstring).
    "full": {
        "sizes": {"ala3": [50, 200, 1000], "ethanol": [50, 200, 700]},
        "n_val": {"ala3": 50, "ethanol": 50},
        "n_test": {"ala3": 500, "ethanol": 250},
        "budget": runners.NeuralBudget(steps=800),
    },
}
#: Largest training set per (model, dataset) in --full: dense sGDML kernels (float64) of 3·N·M
#: unknowns (ala3, M = 1000: 126,000² = 127 GB, out of reach; M = 200: 5 GB) and the reference's
#: single-thread run time (ala3, M = 200: 4 min on one core).
MAX_M = {
    ("full", layout.GEOPATRA_SGDML, "ala3"): 400,
    ("full", layout.REFERENCE_SGDML, "ala3"): 200,
}


def run_plan(args: argparse.Namespace, notes: list[str]) -> list[dict]:
    """Train and test every (dataset, size, model) of the plan that is not cached yet."""
    plan = PLANS[args.mode]
    rows = []
    for key in args.data:
        data = bench_data.DATASETS[key]
        splits = bench_data.nested_splits(data, plan["sizes"][key], plan["n_val"][key], plan["n_test"][key],
                                          args.work_dir)
        for m, split in splits.items():
            allowed = {model for model in args.models if m <= MAX_M.get((args.mode, model, key), m)}
            common = {"mode": args.mode, "work": args.work_dir}
            sgdml_row = None
            if layout.GEOPATRA_SGDML in allowed or layout.REFERENCE_SGDML in allowed:
                sgdml_row = runners.run_geopatra("sgdml", data, split, device=args.device, threads=args.threads,
                                                 **common)
                if layout.GEOPATRA_SGDML in allowed:
                    rows.append(report(sgdml_row))
            if layout.REFERENCE_SGDML in allowed:
                row = environments.foreign(f"{layout.REFERENCE_SGDML}, {key}, M = {m}", notes, runners.run_reference,
                                           data, split,
                                 sigma=sgdml_row["sigma"], lam=sgdml_row["lam"], **common)
                rows += [report(row)] if row else []
            if layout.GEOPATRA_NN in allowed:
                rows.append(report(runners.run_geopatra("geopatra", data, split, device=args.device,
                                                   threads=args.threads, budget=plan["budget"], **common)))
            if layout.MACE in allowed:
                row = environments.foreign(f"{layout.MACE}, {key}, M = {m}", notes, runners.run_mace, data, split,
                                           device=args.device,
                                 threads=args.threads, budget=plan["budget"], **common)
                rows += [report(row)] if row else []
    return rows


def report(row: dict) -> dict:
    print(f"{row['data']:>8} M={row['M']:<5} {row['model']:<15} F MAE {row['test_F_mae']:8.3f} kcal/mol/Å  "
          f"E MAE {row['test_E_mae']:9.3f} kcal/mol{'  (cached)' if row.get('reused') else ''}", flush=True)
    return row


def all_rows(work: Path, mode: str) -> list[dict]:
    """Every cached learning-curve row of this mode (this and earlier invocations)."""
    rows = [json.loads(p.read_text()) for p in sorted((work / "runs" / mode).glob("*/*/bench.json"))]
    plan = PLANS[mode]
    keep = []
    for r in rows:
        if r["data"] not in plan["sizes"] or r["n_test"] != plan["n_test"][r["data"]]:
            continue
        if r["model"] == layout.REFERENCE_SGDML and r.get("perms_from") != "reference find_perms":
            continue  # reference runs of training_cost.py (given permutations, fixed σ)
        keep.append(r)
    return sorted(keep, key=lambda r: (r["data"], layout.MODELS.index(r["model"]), r["M"]))


def note(row: dict) -> str:
    if row["model"] == layout.GEOPATRA_SGDML:
        return f"σ = {row['sigma']:g} (validation), {row['n_perms']} perms"
    if row["model"] == layout.REFERENCE_SGDML:
        return f"σ = {row['sigma']:g} (geopatra's), {row['n_perms']} perms (own find_perms)"
    if row["model"] == layout.MACE:
        chosen = "Stage Two" if "stagetwo" in Path(row["model_file"]).name else "stage one"
        return (f"{row['steps']} steps × {row['batch_size']}, {row['n_params']:,} params, {row['mace_args']}; "
                f"{chosen} model")
    return f"{row['steps']} steps × {row['batch_size']}, {row['config']}"


def write(rows: list[dict], notes: list[str], args: argparse.Namespace) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in bench_data.DATASETS if any(r["data"] == k for r in rows)]
    body = [
        "Test force MAE [kcal/mol/Å] and energy MAE [kcal/mol] against the number of training frames M. "
        "Every model sees the same training, validation and test frames at each M (split files below); "
        "the neural models train for a fixed number of optimizer steps (so larger M means fewer epochs) "
        "and are tested at their best validation epoch. sGDML models are exact kernel solves. "
        f"Runs finished {reporting.run_span(rows)}.",
        "",
    ]
    if args.mode == "fast":
        body += [
            "**Fast mode**: small budgets so that the whole study runs in minutes on a CPU (the demo-sized "
            "GeoPaTra and a 32-channel MACE, about 150 optimizer steps each). The neural models are far from "
            "converged, and MACE's energies with them: its stage-one models carry an energy offset of up to "
            "about 150 kcal/mol that its Stage Two removes, at a cost in forces within this budget. Read "
            "these rows as a check that every pipeline runs on identical frames, not as the models' accuracy; "
            "the `--full` mode (GPU) trains longer.", ""]
    for key in keys:
        sel = [r for r in rows if r["data"] == key]
        body += [f"## {bench_data.DATASETS[key].label}", ""]
        first = sel[0]
        body.append(f"Validation {first['n_val']} frames, test {first['n_test']} frames "
                    f"(test indices sha256 {first['test_sha']}…), seed {first['seed']}; split files:")
        for m in sorted({r["M"] for r in sel}):
            r = next(r for r in sel if r["M"] == m)
            body.append(f"- M = {m}: `{r['split_file']}` (train indices sha256 {r['train_sha']}…)")
        body += [""]
        body += reporting.table(
            ["M", "model", "test F MAE [kcal/mol/Å]", "test E MAE [kcal/mol]", "device", "settings"],
            [[r["M"], r["model"], reporting.fmt(r["test_F_mae"]), reporting.fmt(r["test_E_mae"]), r["device"], note(r)]
             for r in sorted(sel, key=lambda r: (r["M"], layout.MODELS.index(r["model"])))],
        )
        body.append("")
    body += [
        "Notes:", *(f"- {n}" for n in notes),
        "- sgdml 1.0.3 is trained at the σ and λ geopatra-sGDML chose on the validation frames, with the "
        "permutations its own `find_perms` finds on the training frames; geopatra-sGDML uses its own "
        "detection. Where the two permutation counts (settings column) agree the two sGDML rows are the "
        "same model and must agree to rounding; where they differ, so do the models.",
        "- MACE is trained in eV and eV/Å (the data converted; errors converted back to kcal/mol), with "
        "E0s by its `average`, its default loss weights (energy 1, forces 100), Stage Two (energy weight "
        "1000 for the last quarter of the epochs), float32; tested with whichever of its two models (stage "
        "one, best by validation loss, or the final Stage Two one) has the lower validation force MAE.",
        "- Runs with `(cached)` in the console were reused from an earlier invocation (same split, mode "
        "and settings); delete `experiments/work/bench/runs/<mode>` to rerun them.",
    ]
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 3.8 * len(keys)), squeeze=False)
    for i, key in enumerate(keys):
        for j, (col, label) in enumerate((("test_F_mae", "force MAE [kcal/mol/Å]"),
                                          ("test_E_mae", "energy MAE [kcal/mol]"))):
            ax = axes[i, j]
            for model in layout.MODELS:
                sel = sorted((r for r in rows if r["data"] == key and r["model"] == model), key=lambda r: r["M"])
                if sel:
                    ax.loglog([r["M"] for r in sel], [r[col] for r in sel], "o-", label=model)
            ax.set(xlabel="training frames M", ylabel=label, title=bench_data.DATASETS[key].label.split(",")[0])
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    return reporting.write_report("learning_curves", args.mode, args.results_dir, args.device,
                           "Learning curves: four force fields on identical frames", body, rows, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    reporting.add_common_args(parser)
    parser.add_argument("--data", nargs="+", choices=sorted(bench_data.DATASETS), default=list(bench_data.DATASETS))
    parser.add_argument("--models", nargs="+", choices=layout.MODELS, default=list(layout.MODELS))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    notes: list[str] = []
    run_plan(args, notes)
    print(f"wrote {write(all_rows(args.work_dir, args.mode), notes, args)}")


if __name__ == "__main__":
    main()
