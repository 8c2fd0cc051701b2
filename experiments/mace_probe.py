"""MACE's tuning budget: variants of its published recipe on the race's frames and machinery.

    python -m experiments.mace_probe --data ethanol --train 50 --budget 600 --variants 0 1 --seed 4

GeoPaTra's recipes were tuned (``overfit_probe.py``, the race's rounds); MACE ran its published recipe
(``mace_side.py``: 32 channels, L = 1, AMSGrad, learning rate 0.01, EMA, Stage Two, batch 5). This gives
MACE a tuning budget of its own. Two variants at a time, each pinned to its own core with one thread:
first each variant's epoch time is measured (3 epochs, both variants side by side, as they then train),
so that its epochs are set for the kill at the budget to end it after its Stage Two has begun, as in the
race; then both train for the budget and are tested as the race tests MACE (the model with the lower
validation force MAE, on the race's 500 test frames). A budget shorter than the race's ranks variants,
it does not replace the race. Rows in ``experiments/results/mace_probe/``; report
``experiments/results/mace_probe.{md,png,json}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import bench_data, reporting, variant_probes
from experiments import timed_runs as tr
from experiments.accuracy_race import CALIBRATION_EPOCHS, MACE_BATCH, N_TEST, N_VAL

#: (name, arguments of mace_run_train after the published recipe's, batch size) of each variant
VARIANTS = [
    ("published recipe (32 channels, L = 1, learning rate 0.01, batch 5)", [], MACE_BATCH),
    ("64 channels (not 32)", ["--num_channels=64"], MACE_BATCH),
    ("L = 2 (not 1)", ["--max_L=2"], MACE_BATCH),
    ("batch 2 (not 5)", [], 2),
]


def calibrated_epochs(data: bench_data.BenchData, split: Path, work: Path, pair: list[int], cores: list[int],
                      budget: float) -> dict[int, int]:
    """Epochs of each variant for a run killed at ``budget`` (``timed_runs.mace_epochs_for``), from
    ``CALIBRATION_EPOCHS`` epochs of the pair side by side."""
    jobs = [tr.mace_job(data, split, work / f"calibration_v{v}", budget_s=None, seed=0, core=core,
                        epochs=CALIBRATION_EPOCHS, batch_size=VARIANTS[v][2], mace_args=tuple(VARIANTS[v][1]),
                        name=f"v{v}") for v, core in zip(pair, cores)]
    tr.run_together(jobs)
    curves = {v: json.loads((work / f"calibration_v{v}" / "side.json").read_text())["curve"] for v in pair}
    return {v: tr.mace_epochs_for(budget, tr.seconds_per_epoch(curve)) for v, curve in curves.items()}


def main() -> None:
    args = variant_probes.parse_args(__doc__.split("\n")[0], len(VARIANTS))
    data = bench_data.DATASETS[args.data]
    split = bench_data.nested_splits(data, [args.train], N_VAL, N_TEST, args.work_dir)[args.train]
    rows_dir = args.results_dir / "mace_probe"
    for pair in variant_probes.pairs_to_run(args, rows_dir):
        work = args.work_dir / "mace_probe" / f"{args.data}_M{args.train}_b{args.budget:g}_seed{args.seed}"
        epochs = calibrated_epochs(data, split, work, pair, args.cores, args.budget)
        jobs = {v: (core, tr.mace_job(data, split, work / f"v{v}", budget_s=args.budget, seed=args.seed, core=core,
                                      epochs=epochs[v], batch_size=VARIANTS[v][2], mace_args=tuple(VARIANTS[v][1]),
                                      name=f"v{v}"))
                for v, core in zip(pair, args.cores)}
        load = tr.load_average()
        walls = tr.run_together([job for _, job in jobs.values()])
        for v, (core, _) in jobs.items():
            row = tr.mace_row(data, split, work / f"v{v}", fit_wall_s=walls[f"v{v}"], budget_s=args.budget,
                              seed=args.seed, core=core, batch_size=VARIANTS[v][2])
            row.update(variant=v, variant_name=VARIANTS[v][0], epochs_planned=epochs[v], load_before=load)
            variant_probes.save_row(args, rows_dir, v, VARIANTS[v][0], row)
    print(write_report(rows_dir, args.results_dir))


def write_report(rows_dir: Path, results: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    header = ["data", "M", "budget [s]", "seed", "variant", "test F MAE [kcal/mol/Å]", "best val F MAE",
              "test E MAE [kcal/mol]", "epochs done / planned", "killed at budget", "steps", "model tested",
              "mace_run_train arguments"]
    table = [[r["data"], r["M"], f"{r['budget_s']:g}", r["seed"], f"{r['variant']}: {r['variant_name']}",
              f"{r['test_F_mae']:.3f}", f"{min((c[1] for c in r['curve']), default=float('nan')):.3f}",
              f"{r['test_E_mae']:.3f}", f"{len(r['curve'])} / {r['epochs_planned']}",
              "yes" if r["killed_at_budget"] else "no", r["steps"], Path(r["model_file"]).name,
              f"`{r['mace_args']}`, batch {r['batch_size']}"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        if r["curve"]:
            ax.plot(*zip(*r["curve"]), label=f"{r['data']} M = {r['M']}, v{r['variant']} seed {r['seed']}", lw=1)
    ax.set(xlabel="training wall time [s] (one core)", ylabel="validation force MAE [kcal/mol/Å]", yscale="log")
    ax.legend(fontsize=6)
    fig.tight_layout()
    body = ["MACE's recipe varied as named (the rest as `experiments/mace_side.py` runs it: AMSGrad, EMA 0.99, "
            "per-atom E 1 : F 100, Stage Two); the race's split files (50 validation, 500 test frames); two runs "
            "at a time, each on its own core, one thread, epochs calibrated per variant beside the other. Split "
            "files and hashes in the JSON rows.", "", *reporting.table(header, table)]
    return reporting.write_report("mace_probe", None, results, "cpu", "MACE tuning probe", body, rows, fig)


if __name__ == "__main__":
    main()
