"""Energy + forces cost of GeoPaTra checkpoints side by side, as ratios (issue 15's cost target:
today's model at 42 atoms at most 2x the model before the issue, one thread).

    python -m experiments.ef_cost --model before=A.ckpt --model round4=B.ckpt [--name ef_cost]

One torch thread. For each structure the models are timed in turns, ``--rounds`` times (each turn a
median of ``--repeats`` calls through the ASE calculator after untimed warm-up calls), so a change of
load on the machine falls on every model alike; a model's time is the median over its turns, and
each model is reported as a ratio to the first one named. Writes experiments/results/<name>.{md,png,json}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from experiments import calculator_timing, layout, reporting
from experiments.md_drift import parse_models

STRUCTURES = ("Ac-Ala3-NHMe", "DWCNT")  # 42 and 370 atoms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=CHECKPOINT",
                        help="a checkpoint to time (repeatable); ratios are to the first")
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES), choices=STRUCTURES)
    parser.add_argument("--rounds", type=int, default=5, help="turns per model and structure")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per turn (median)")
    parser.add_argument("--dtype", default=None, help="model dtype (default: the checkpoint's)")
    parser.add_argument("--name", default="ef_cost", help="report file stem")
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()

    import torch
    from ase import Atoms

    from experiments.transformer_scaling import load_structure
    from geopatra.calculator import GeoPatraCalculator

    torch.set_num_threads(1)
    models = parse_models(args.model, Path("."))
    names = [name for name, _ in models]
    if len(set(names)) != len(names):
        raise SystemExit(f"--model names must differ, got {names}")
    calculators = {name: GeoPatraCalculator(path, dtype=args.dtype) for name, path in models}
    rows = []
    for structure in args.structures:
        pos, z, note = load_structure(structure)
        atoms = Atoms(numbers=z, positions=pos)
        turns: dict[str, list[float]] = {name: [] for name, _ in models}
        for turn in range(args.rounds):
            for name in names[turn % len(names):] + names[: turn % len(names)]:  # each model goes first in turn
                calc = calculators[name]
                timing = calculator_timing.time_calculator(atoms, calc, repeats=args.repeats, md_steps=1)
                turns[name].append(timing["ef_s"])
        first = float(np.median(turns[models[0][0]]))
        for name, path in models:
            ef = float(np.median(turns[name]))
            rows.append({"structure": structure, "n_atoms": len(z), "geometry": note, "model": name,
                         "checkpoint": str(path), "ef_s": ef, "ef_turns_s": turns[name],
                         "ratio_to_first": ef / first, "dtype": str(calculators[name].dtype).removeprefix("torch.")})
        print(f"{structure}: " + ", ".join(f"{r['model']} {1e3 * r['ef_s']:.1f} ms" for r in rows[-len(models):]),
              flush=True)
    write_report(args, rows, names)


def write_report(args: argparse.Namespace, rows: list[dict], names: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    structures = list(dict.fromkeys(r["structure"] for r in rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        ratios = [next(r["ratio_to_first"] for r in rows if r["structure"] == s and r["model"] == name)
                  for s in structures]
        ax.bar(np.arange(len(structures)) + k * width, ratios, width, label=name)
    ax.axhline(2.0, color="k", ls="--", lw=0.8, label="2x (issue 15's limit)")
    ax.set_xticks(np.arange(len(structures)) + width * (len(names) - 1) / 2,
                  [f"{s} ({next(r['n_atoms'] for r in rows if r['structure'] == s)} atoms)" for s in structures])
    ax.set_ylabel(f"E+F time / {names[0]}'s")
    ax.legend(fontsize=8)
    fig.tight_layout()
    header = ["structure", "atoms", "model", "dtype", "E+F [ms]", f"ratio to {names[0]}", "checkpoint"]
    table = [[r["structure"], r["n_atoms"], r["model"], r["dtype"], f"{1e3 * r['ef_s']:.2f}",
              f"{r['ratio_to_first']:.2f}", f"`{r['checkpoint']}`"] for r in rows]
    body = [f"One energy + forces call through `GeoPatraCalculator`, one torch thread; the models are timed in "
            f"turns (each model first in turn), {args.rounds} turns each of the median of {args.repeats} calls "
            f"after {calculator_timing.WARMUP_CALLS} untimed ones; a model's time is the median of its turns. "
            "At equal dtype the weights do not change the cost; the architecture does.",
            "", *reporting.table(header, table)]
    path = reporting.write_report(args.name, None, args.results_dir, "cpu",
                                  "GeoPaTra energy + forces cost, side by side", body, rows, fig)
    print(path)
    return path


if __name__ == "__main__":
    main()
