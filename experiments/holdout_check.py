"""The accuracy race's models tested again on frames that no run and no choice of recipe ever saw.

    python -m experiments.holdout_check              # every cell whose race runs are on disk
    python -m experiments.holdout_check --report     # the report from the rows present

GeoPaTra's recipes were chosen on the race's 500 test frames: an overfit-probe variant was raced, and a
race round shipped, when its test force MAE was lower. Its errors on those frames are then biased low,
and MACE's (its published recipe, never chosen here) are not. This check trains nothing: for each seed
of a cell's standing round (the last shipped round with rows) it tests GeoPaTra's best checkpoint and
MACE's model (selected on the validation frames, as in the race) on the frames of the data set outside
every split the race and the overfit probe use (``bench_data.unused_frames``: ethanol 250 of 1,000, the
peptide 450 of 2,000), and again on the race's test frames, which must give the race's rows back (a
check of this evaluation). Needs the race's run directories (``experiments/work/race/runs/full``, not
committed): a cell whose runs are gone is skipped and named. One core, one thread.
Rows in ``experiments/results/holdout_check/``; report ``experiments/results/holdout_check.{md,png,json}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments import accuracy_race as race
from experiments import bench_data, environments, layout, reporting

ROWS = "holdout_check"
#: largest relative difference between this evaluation on the race's test frames and the race's row
REPRODUCE_RTOL = 1e-3


def standing_round(geopatra_rows: list[dict]) -> int | None:
    """The last shipped round among a cell's GeoPaTra race rows, or None."""
    return max({race.row_round(r) for r in geopatra_rows} - race.NOT_SHIPPED, default=None)


def geopatra_errors(checkpoint: Path, data: bench_data.BenchData,
                    indices: list[np.ndarray]) -> list[tuple[float, float]]:
    """Energy MAE [kcal/mol] and force MAE [kcal/mol/Å] of a checkpoint's potential on each set of frames."""
    import torch

    from geopatra.checkpoint import load_potential
    from geopatra.data import read_dataset
    from geopatra.models.forces import predict_frames

    torch.set_num_threads(1)
    dataset = read_dataset(data.path)
    potential, _ = load_potential(checkpoint)
    errors = []
    for index in indices:
        energy, forces = predict_frames(potential, dataset.R[index], dataset.z)
        errors.append((float(np.abs(energy.numpy() - dataset.E[index].reshape(-1)).mean()),
                       float(np.abs(forces.numpy() - dataset.F[index]).mean())))
    return errors


def mace_errors(run_dir: Path, data: bench_data.BenchData, split_file: Path, index: np.ndarray,
                work: Path) -> tuple[float, float]:
    """The same for the MACE run in ``run_dir``: its model chosen on the split's validation frames."""
    from geopatra.data import read_dataset

    with np.load(split_file) as s:
        indices = {"train": s["train"], "val": s["val"], "test": index}
    frames = bench_data.write_side_frames(work / "frames.npz", read_dataset(data.path), indices)
    out = work / "mace.json"
    cmd = [str(environments.mace_python()), "-m", layout.MACE_SIDE, "evaluate", "--frames", str(frames),
           "--run-dir", str(run_dir), "--out", str(out)]
    environments.run_checked(cmd, environments.thread_env(1), work / "mace.log")
    result = json.loads(out.read_text())
    return result["test_E_mae"], result["test_F_mae"]


def check_cell(key: str, m: int, race_rows: Path, rows_dir: Path, work: Path) -> str:
    """Rows of every seed of (data, M)'s standing round; returns what was done."""
    data = bench_data.DATASETS[key]
    geopatra_rows = [json.loads(p.read_text()) for p in race_rows.glob(f"{key}_M{m}_seed*_GeoPaTra*.json")]
    race_round = standing_round(geopatra_rows)
    if race_round is None:
        return f"{key} M = {m}: no race rows"
    sizes = race.PLANS["full"]["sizes"][key]
    held_out = bench_data.unused_frames(data, sizes, race.N_VAL, race.N_TEST)
    done = []
    for seed in sorted(r["seed"] for r in geopatra_rows if race.row_round(r) == race_round):
        for model in (layout.GEOPATRA_NN, layout.MACE):
            source = race.row_path(race_rows, key, m, seed, model, race_round)
            path = rows_dir / f"{key}_M{m}_seed{seed}_{model}_r{race_round}.json"
            if not source.exists() or path.exists():
                continue
            row = json.loads(source.read_text())
            split = layout.ROOT / row["split_file"]
            with np.load(split) as s:
                test = s["test"]
            if model == layout.GEOPATRA_NN:
                checkpoint = layout.ROOT / row["checkpoint"]
                if not checkpoint.exists():
                    return f"{key} M = {m} round {race_round}: checkpoint {row['checkpoint']} is gone"
                held, again = geopatra_errors(checkpoint, data, [held_out, test])
            else:
                run_dir = (layout.ROOT / row["model_file"]).parent
                if not run_dir.exists():
                    return f"{key} M = {m} round {race_round}: MACE run {run_dir} is gone"
                cell_work = work / f"{key}_M{m}_seed{seed}_r{race_round}"
                held, again = (mace_errors(run_dir, data, split, index, cell_work / name)
                               for name, index in (("held_out", held_out), ("test", test)))
            reproduced = abs(again[1] - row["test_F_mae"]) <= REPRODUCE_RTOL * row["test_F_mae"]
            facts = bench_data.split_facts(split)
            out = {**facts, "split_seed": facts["seed"], "data": key, "M": m, "seed": seed, "round": race_round,
                   "model": model,
                   "held_out_F_mae": held[1], "held_out_E_mae": held[0], "n_held_out": len(held_out),
                   "held_out_sha": bench_data.index_digest(held_out), "race_test_F_mae": row["test_F_mae"],
                   "race_test_F_mae_again": again[1], "reproduced": reproduced}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(out, indent=1))
            done.append(f"{model} seed {seed}: held-out F MAE {held[1]:.3f}, race test {row['test_F_mae']:.3f} "
                        f"(again {again[1]:.3f})")
            print(f"{key} M = {m} round {race_round} {done[-1]}", flush=True)
    return f"{key} M = {m} round {race_round}: {len(done)} new rows"


def write_report(rows_dir: Path, results: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    cells = sorted({(r["data"], r["M"], r["round"]) for r in rows})
    header = ["data", "M", "round", "seeds", "GeoPaTra, race test", "MACE, race test", "ratio",
              "GeoPaTra, held out", "MACE, held out", "ratio", "held out - race test: GeoPaTra / MACE",
              "verdict on the held-out frames"]
    table, per_seed = [], []
    fig, axes = plt.subplots(1, max(1, len(cells)), figsize=(4.2 * max(1, len(cells)), 4), squeeze=False)
    for ax, (key, m, rnd) in zip(axes[0], cells):
        cell = [r for r in rows if (r["data"], r["M"], r["round"]) == (key, m, rnd)]
        seeds = sorted({r["seed"] for r in cell if r["model"] == layout.GEOPATRA_NN}
                       & {r["seed"] for r in cell if r["model"] == layout.MACE})
        by = {(r["model"], r["seed"]): r for r in cell}
        values = {(model, what): [by[(model, s)][what] for s in seeds]
                  for model in (layout.GEOPATRA_NN, layout.MACE) for what in ("race_test_F_mae", "held_out_F_mae")}
        if not seeds:
            continue
        means = {k: race.stats(v) for k, v in values.items()}
        g_t, m_t = means[(layout.GEOPATRA_NN, "race_test_F_mae")], means[(layout.MACE, "race_test_F_mae")]
        g_h, m_h = means[(layout.GEOPATRA_NN, "held_out_F_mae")], means[(layout.MACE, "held_out_F_mae")]
        table.append([key, m, rnd, len(seeds), f"{g_t[0]:.3f} ± {g_t[1]:.3f}", f"{m_t[0]:.3f} ± {m_t[1]:.3f}",
                      f"{g_t[0] / m_t[0]:.2f}", f"{g_h[0]:.3f} ± {g_h[1]:.3f}", f"{m_h[0]:.3f} ± {m_h[1]:.3f}",
                      f"{g_h[0] / m_h[0]:.2f}", f"{g_h[0] - g_t[0]:+.3f} / {m_h[0] - m_t[0]:+.3f}",
                      race.verdict(values[(layout.GEOPATRA_NN, "held_out_F_mae")],
                                   values[(layout.MACE, "held_out_F_mae")])])
        for s in seeds:
            g, mm = by[(layout.GEOPATRA_NN, s)], by[(layout.MACE, s)]
            per_seed.append([key, m, s, f"{g['race_test_F_mae']:.3f}", f"{mm['race_test_F_mae']:.3f}",
                             f"{g['held_out_F_mae']:.3f}", f"{mm['held_out_F_mae']:.3f}",
                             f"{g['held_out_E_mae']:.3f}", f"{mm['held_out_E_mae']:.3f}",
                             "yes" if g["reproduced"] and mm["reproduced"] else
                             f"no ({g['race_test_F_mae_again']:.3f} / {mm['race_test_F_mae_again']:.3f})"])
        for model, color in ((layout.GEOPATRA_NN, "tab:blue"), (layout.MACE, "tab:orange")):
            ax.scatter(values[(model, "race_test_F_mae")], values[(model, "held_out_F_mae")], color=color,
                       label=model)
        lo = min(min(v) for v in values.values())
        hi = max(max(v) for v in values.values())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set(title=f"{key}, M = {m} (round {rnd})", xlabel="race test force MAE [kcal/mol/Å]")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("held-out force MAE [kcal/mol/Å]")
    fig.tight_layout()
    frames = sorted({f"{r['data']}: {r['n_held_out']} frames (sha {r['held_out_sha']})" for r in rows})
    body = ["Each seed's race models (GeoPaTra's best checkpoint, MACE's model chosen on the validation frames) "
            "tested on the data set's frames outside every split of the race and the overfit probe, which no "
            "choice of recipe saw, next to their race test error. Force MAE in kcal/mol/Å; ± is half the range "
            "over seeds; the verdict is the race's rule (a difference inside the two half ranges together is "
            "no result). Both models are scored on the same frames, so a larger rise from the race's test frames "
            "to the held-out ones for GeoPaTra than for MACE measures the bias of choosing GeoPaTra's recipes on "
            "the test frames (with the noise of 250-450 frames). Held-out frames: " + "; ".join(frames)
            + ". `reproduced`: this evaluation on the race's "
            f"test frames gives the race's row back within {REPRODUCE_RTOL:g} (relative).", "",
            *reporting.table(header, table), "", "Per seed (force MAE; energy MAE in kcal/mol):", "",
            *reporting.table(["data", "M", "seed", "GeoPaTra, race test", "MACE, race test", "GeoPaTra, held out",
                              "MACE, held out", "GeoPaTra E, held out", "MACE E, held out", "reproduced"], per_seed)]
    missing = [f"{key} M = {m}" for key, sizes in race.PLANS["full"]["sizes"].items() for m in sizes
               if not any((key, m) == c[:2] for c in cells)]
    if missing:
        body += ["", "Not checked (the race's run directories are no longer on disk): " + ", ".join(missing) + "."]
    return reporting.write_report(ROWS, None, results, "cpu", "Accuracy race on held-out frames", body, rows, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", action="store_true", help="only write the report from the rows present")
    parser.add_argument("--work-dir", type=Path, default=layout.EXPERIMENTS / "work" / "race")
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()
    race_rows, rows_dir = args.results_dir / "accuracy_race" / "full", args.results_dir / ROWS
    if not args.report:
        for key, sizes in race.PLANS["full"]["sizes"].items():
            for m in sizes:
                print(check_cell(key, m, race_rows, rows_dir, args.work_dir / "holdout"), flush=True)
    print(write_report(rows_dir, args.results_dir))


if __name__ == "__main__":
    main()
