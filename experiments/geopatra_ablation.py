"""GeoPaTra ablation: the training recipe and each attention-layer option, at a fixed wall-clock budget.

    python -m experiments.geopatra_ablation                  # 5 min per run, 2 seeds (about 50 min)
    python -m experiments.geopatra_ablation --steps 7        # only some steps (indices of steps())
    python -m experiments.geopatra_ablation --budget 600     # longer runs; rows are cached per budget

On ``configs/geopatra.yaml`` with every layer option off: the recipe shipped before issue 15
(``geopatra_ablation/shipped_recipe.yaml``), today's recipe, each layer option alone on today's
recipe, then the options in ``COMBINED`` together. Ac-Ala3-NHMe (bundled), M = 200 training frames,
50 validation and 500 test frames (the race's split file), two training seeds. Two runs at a time,
each pinned to its own core with one thread, started together; the load average is recorded. A short
budget ranks changes in the early phase of training only: it is not the race. Also reported per
step: energy + forces time of the model at 42 and 370 atoms (one thread, median of 5 calls after 3
warm-up calls).
Writes ``experiments/results/geopatra_ablation.{md,png,json}``; rows in ``<results>/geopatra_ablation/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments import bench_data, calculator_timing, layout, reporting
from experiments import timed_runs as tr

CONFIG = layout.ROOT / "configs" / "geopatra.yaml"
SHIPPED = layout.EXPERIMENTS / "geopatra_ablation" / "shipped_recipe.yaml"
P = layout.POTENTIAL_ARG
#: (name, overrides): each layer option alone, on the force-field recipe.
LAYER_STEPS = [
    ("+ radial rank 4, value projection", [P + "radial_rank", "4", P + "value_projection", "true"]),
    ("+ per-channel logit filter", [P + "logit_filter", "channel"]),
    ("+ node invariants in feed-forward", [P + "node_invariants", "true"]),
    ("+ softmax with a sink", [P + "attention_normalization", "softmax_sink"]),
    ("+ equivariant layer norm", [P + "equivariant_norm", "true"]),
]
#: Indices into LAYER_STEPS of the options combined in the last step (chosen from the single-option rows).
COMBINED = (2, 4)


#: The two energy normalisers of the recipe (``ForceFieldTask.energy_error_scale``).
FORCE_RMS = ["--model.init_args.energy_error_scale", "force_rms"]
ENERGY_STD = ["--model.init_args.energy_error_scale", "energy_std"]


def steps() -> list[tuple[str, list[str]]]:
    """(name, overrides) of each step: the shipped recipe, today's recipe, each layer option alone on
    it, the options of ``COMBINED`` together, the recipe with energies normalised by their std, and
    both."""
    out = [("shipped recipe", ["--config", str(SHIPPED)]), ("force-field recipe", FORCE_RMS)]
    out += [(name, [*FORCE_RMS, *extra]) for name, extra in LAYER_STEPS]
    combined = [LAYER_STEPS[i] for i in COMBINED]
    name, layer = " ".join(n for n, _ in combined), [x for _, extra in combined for x in extra]
    out.append((name, [*FORCE_RMS, *layer]))
    out.append(("force-field recipe, energy / its std", ENERGY_STD))
    out.append((f"{name}, energy / its std", [*ENERGY_STD, *layer]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, nargs="*", default=None, help="indices of the steps to run")
    parser.add_argument("--report", action="store_true", help="only rewrite the report from the rows present")
    parser.add_argument("--work-dir", type=Path, default=layout.EXPERIMENTS / "work" / "ablation")
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()
    data = bench_data.DATASETS["ala3"]
    split = bench_data.nested_splits(data, [200], 50, 500, args.work_dir)[200]
    rows_dir = args.results_dir / "geopatra_ablation"
    plan = [(i, name, over, seed) for i, (name, over) in enumerate(steps()) for seed in args.seeds
            if args.steps is None or i in args.steps]
    todo = [] if args.report else [p for p in plan if not _row_path(rows_dir, p, args.budget).exists()]
    for pair in (todo[k : k + 2] for k in range(0, len(todo), 2)):
        jobs, dirs = [], {}
        for core, (i, name, over, seed) in enumerate(pair):
            run_dir = args.work_dir / "runs" / f"b{args.budget:g}" / f"step{i}_seed{seed}"
            key = f"step{i}_seed{seed}"
            overrides = _configs_first(over)
            dirs[key] = (run_dir, i, name, over, overrides, seed, core)
            jobs.append(tr.Job(key, tr.geopatra_job(key, data, split, run_dir, budget_s=args.budget, seed=seed,
                                                    core=core, overrides=overrides, config=CONFIG).cmd,
                               core, run_dir / "fit.log"))
        load_before = tr.load_average()
        walls = tr.run_together(jobs)
        for key, (run_dir, i, name, over, overrides, seed, core) in dirs.items():
            row = tr.geopatra_row(name, data, split, run_dir, config=CONFIG, overrides=overrides,
                                  fit_wall_s=walls[key], budget_s=args.budget, seed=seed, core=core)
            row.update(step=i, load_before=load_before, load_after=tr.load_average(),
                       ef_s=_ef_times(Path(layout.ROOT / row["checkpoint"])))
            path = _row_path(rows_dir, (i, name, over, seed), args.budget)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(row, indent=1))
            print(f"{name} seed {seed}: test F MAE {row['test_F_mae']:.3f} kcal/mol/Å, {row['steps']} steps",
                  flush=True)
    print(write_report(rows_dir, args.results_dir, args.budget))


def _configs_first(over: list[str]) -> list[str]:
    """A step's overrides with its ``--config X.yaml`` overlays first (jsonargparse applies arguments
    in order, so the flags after them win)."""
    configs = [o for o in over if o.endswith(".yaml")]
    flags = [o for o in over if o != "--config" and not o.endswith(".yaml")]
    return [x for c in configs for x in ("--config", c)] + flags


def _row_path(rows_dir: Path, plan_item: tuple, budget: float) -> Path:
    i, _, _, seed = plan_item
    return rows_dir / f"b{budget:g}_step{i}_seed{seed}.json"


def _ef_times(checkpoint: Path) -> dict[str, float]:
    """Energy + forces time [s] of the checkpoint's model at 42 and 370 atoms (one thread)."""
    import torch
    from ase import Atoms

    from experiments.ef_cost import STRUCTURES
    from experiments.transformer_scaling import load_structure
    from geopatra.calculator import GeoPatraCalculator

    torch.set_num_threads(1)
    calc = GeoPatraCalculator(checkpoint)
    out = {}
    for name in STRUCTURES:
        pos, z, _ = load_structure(name)
        out[str(len(z))] = calculator_timing.time_calculator(Atoms(numbers=z, positions=pos), calc, repeats=5,
                                                             md_steps=1)["ef_s"]
    return out


def write_report(rows_dir: Path, results: Path, budget: float) -> Path:
    """Markdown + PNG + JSON of every row of this budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob(f"b{budget:g}_step*_seed*.json"))]
    by_step: dict[int, list[dict]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row)
    names = {i: name for i, (name, _) in enumerate(steps())}
    base = np.mean([r["test_F_mae"] for r in by_step.get(0, [])]) if 0 in by_step else None
    recipe = np.mean([r["test_F_mae"] for r in by_step.get(1, [])]) if 1 in by_step else None

    def spread(values: list[float]) -> str:
        return f"{np.mean(values):.3g} ± {np.ptp(values) / 2:.2g}" if len(values) > 1 else f"{values[0]:.3g}"

    table_rows = []
    for i in sorted(by_step):
        rs = by_step[i]
        f = [r["test_F_mae"] for r in rs]
        table_rows.append([
            i, names.get(i, rs[0]["model"]), len(rs), spread(f),
            "—" if base is None else f"{np.mean(f) / base:.2f}",
            "—" if recipe is None else f"{np.mean(f) / recipe:.2f}",
            spread([r["test_E_mae"] for r in rs]), spread([r["test_E_mae_per_atom"] for r in rs]),
            spread([r["train_F_mae_last"] for r in rs if r["train_F_mae_last"] is not None] or [float("nan")]),
            f"{np.mean([r['steps'] for r in rs]):.0f}",
            f"{1e3 * np.mean([r['step_time_s'] or np.nan for r in rs]):.0f}",
            f"{1e3 * np.mean([r['ef_s']['42'] for r in rs]):.1f}",
            f"{np.mean([r['ef_s']['370'] for r in rs]):.2f}",
        ])
    header = ["step", "change", "seeds", "test F MAE [kcal/mol/Å]", "F ratio to step 0", "F ratio to step 1",
              "test E MAE [kcal/mol]", "E MAE per atom [kcal/mol]", "train F MAE (last) [kcal/mol/Å]",
              "steps", "step time [ms]", "E+F 42 atoms [ms]", "E+F 370 atoms [s]"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(names))))
    for i in sorted(by_step):
        for r in by_step[i]:
            curve = np.array(r["curve"]) if r["curve"] else np.zeros((0, 2))
            if len(curve):
                ax1.plot(curve[:, 0], curve[:, 1], color=colors[i], ls="-" if r["seed"] == 0 else "--",
                         label=f"{i}: {names.get(i)}" if r["seed"] == min(x["seed"] for x in by_step[i]) else None)
        ax2.scatter([i] * len(by_step[i]), [r["test_F_mae"] for r in by_step[i]], color=colors[i])
    ax1.set(xlabel="training wall time [s] (one core)", ylabel="validation force MAE [kcal/mol/Å]", yscale="log",
            title=f"validation during training (budget {budget:g} s)")
    ax1.legend(fontsize=7)
    ax2.set(xlabel="ablation step", ylabel="test force MAE [kcal/mol/Å]", title="test force MAE per seed")
    fig.tight_layout()
    split = rows[0] if rows else {}
    body = [
        f"Command: `python -m experiments.geopatra_ablation --budget {budget:g}`. Step 0 is the recipe shipped "
        "before issue 15 (`experiments/geopatra_ablation/shipped_recipe.yaml`) on the architecture of "
        "`configs/geopatra.yaml` with every layer option off; step 1 today's recipe; steps 2-6 one layer "
        "option each on top of step 1; step 7 the options that helped, combined; step 8 today's recipe with the "
        "energy error divided by the training energies' std instead of the force RMS; step 9 steps 7 and 8 "
        "together.",
        f"Data: Ac-Ala3-NHMe (bundled, GFN2-xTB), M = {split.get('n_train')}, {split.get('n_val')} validation and "
        f"{split.get('n_test')} test frames; split `{split.get('split_file')}` (seed {split.get('split_seed')}, train "
        f"sha256[:12] {split.get('train_sha')}, test {split.get('test_sha')}).",
        f"Budget: {budget:g} s of training per run (Lightning `max_time`, validation included), two runs at a "
        "time, each pinned to its own core with one thread; tested at the checkpoint with the best validation "
        "force MAE (EMA weights). ± is half the range over the seeds. **A short budget ranks the changes in the "
        "early phase of training only; it is not the accuracy race** (`accuracy_race.py`).",
        *(["Rows without a validation curve (step 0 of the first run) lost it because the overlay config reset "
           "the callback list and with it the timer callback (fixed since); their test errors are unaffected."]
          if any(not r["curve"] for r in rows) else []),
        *([f"Not run at this budget: steps {', '.join(str(i) for i in sorted(set(names) - set(by_step)))}."]
          if set(names) - set(by_step) else []),
        "Load average (1 min) before each pair: "
        + ", ".join(sorted({f"{r['load_before'][0]:.2f}" for r in rows})) + ".",
        "",
        *reporting.table(header, table_rows),
    ]
    return reporting.write_report("geopatra_ablation", None, results, "cpu",
                           "GeoPaTra ablation: training recipe and attention-layer options", body, rows, fig)


if __name__ == "__main__":
    main()
