"""Writes ``experiments/results/README.md``: one table over every comparison benchmark present.

    python -m experiments.summary [--results-dir experiments/results]

Reads the ``.json`` rows that ``learning_curves.py``, ``training_cost.py`` and ``inference.py`` write
next to their markdown (``--fast`` → ``<study>.json``, ``--full`` → ``<study>_full.json``), the rows
of ``sgdml_symmetry_cap.json`` (no modes) and ``preconditioners.json``. Each summary row names its
device, its data and its exact frames (split file and index digests). Runs nothing itself.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from pathlib import Path

from experiments import bench_data, layout, reporting
from experiments.accuracy_race import round_label, row_round

STUDIES = ("learning_curves", "training_cost", "inference")


def load(results: Path) -> list[tuple[str, str, dict]]:
    """``(study, mode, payload)`` for each study file present, fast before full."""
    found = []
    for study in STUDIES:
        for mode, suffix in (("fast", ""), ("full", "_full")):
            path = results / f"{study}{suffix}.json"
            if path.exists():
                found.append((study, mode, json.loads(path.read_text())))
    return found


def link(study: str, mode: str) -> str:
    name = f"{study}{'' if mode == 'fast' else '_full'}"
    return f"[{name}.md]({name}.md)"


def frames_of(rows: list[dict]) -> str:
    """'split_v20_t200_M{50,100}.npz (test a1b2…; train 3c4d…, 5e6f…)'."""
    files = sorted({Path(r["split_file"]).name for r in rows}, key=lambda f: int(re.search(r"M(\d+)", f).group(1)))
    stems = {re.sub(r"_M\d+\.npz$", "", f) for f in files}
    sizes = ",".join(re.search(r"M(\d+)", f).group(1) for f in files)
    trains = ", ".join(dict.fromkeys(r["train_sha"] for r in sorted(rows, key=lambda r: r["M"])))
    tests = ", ".join(sorted({r["test_sha"] for r in rows if "test_sha" in r}))
    return (f"`{'/'.join(sorted(stems))}_M{{{sizes}}}.npz` (train sha256 {trains}" +
            (f"; test {tests}" if tests else "") + ")")


def learning_rows(mode: str, rows: list[dict]) -> list[list[str]]:
    out = []
    for key in bench_data.DATASETS:
        for model in layout.MODELS:
            sel = sorted((r for r in rows if r["data"] == key and r["model"] == model), key=lambda r: r["M"])
            if not sel:
                continue
            mae = ", ".join(f"{r['M']}: {r['test_F_mae']:.3g}" for r in sel)
            out.append([link("learning_curves", mode), model, sel[-1]["device"], bench_data.DATASETS[key].label,
                        frames_of(sel), f"test F MAE [kcal/mol/Å] by M: {mae}"])
    return out


def cost_rows(mode: str, rows: list[dict]) -> list[list[str]]:
    out = []
    kernel = [r for r in rows if r["part"] == "kernel"]
    for model in dict.fromkeys(r["model"] for r in kernel):
        sel = sorted((r for r in kernel if r["model"] == model), key=lambda r: r["M"])
        cost = ", ".join(f"{r['M']}: {r['train_s']:.3g} s / {r['peak_rss_gb']:.2g} GB" for r in sel)
        out.append([link("training_cost", mode), model, sel[-1]["device"], bench_data.DATASETS[sel[0]["data"]].label,
                    frames_of(sel), f"train time / peak RSS by M: {cost}"])
    neural = [r for r in rows if r["part"] == "neural"]
    for key in dict.fromkeys(r["data"] for r in neural):
        sel = sorted((r for r in neural if r["data"] == key), key=lambda r: r["M"])
        text = "; ".join(
            f"M={r['M']}, target {r['target']:.3g}: GeoPaTra {r[layout.GEOPATRA_NN]['time_to_target_s']:.3g} s, "
            f"MACE {r[layout.MACE]['time_to_target_s']:.3g} s (best in the budget: GeoPaTra "
            f"{r[layout.GEOPATRA_NN]['best_val']:.3g}, MACE {r[layout.MACE]['best_val']:.3g})" for r in sel)
        out.append([link("training_cost", mode), f"{layout.GEOPATRA_NN} vs {layout.MACE}",
                    sel[-1][layout.MACE]["device"],
                    bench_data.DATASETS[key].label, frames_of(sel),
                    f"time to the worse model's best val F MAE [kcal/mol/Å]: {text}"])
    return out


def inference_rows(mode: str, rows: list[dict]) -> list[list[str]]:
    out = []
    names = ", ".join(f"{n} ({a})" for a, n in sorted({(r["n_atoms"], r["structure"]) for r in rows}))
    for device in dict.fromkeys(r["device"] for r in rows):
        for model in dict.fromkeys(r["model"] for r in rows):  # every model measured, compiled ones included
            sel = sorted((r for r in rows if r["device"] == device and r["model"] == model), key=lambda r: r["n_atoms"])
            if not sel:
                continue
            lo, hi = sel[0], sel[-1]
            extra = f", M = {lo['M']}" if "M" in lo else ""
            out.append([link("inference", mode), model + extra, device, names,
                        "one geometry each (`experiments/geometries/`, RDKit, ASE nanotube)",
                        f"E+F {1e3 * lo['ef_s']:.3g} ms ({lo['n_atoms']} atoms) → {1e3 * hi['ef_s']:.3g} ms "
                        f"({hi['n_atoms']}); MD {lo['md_steps_per_s']:.3g} → {hi['md_steps_per_s']:.3g} steps/s"])
    return out


def symmetry_rows(results: Path) -> list[list[str]]:
    """One row per model of ``sgdml_symmetry_cap.json``: test force MAE by permutations kept."""
    path = results / "sgdml_symmetry_cap.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["rows"]
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        sel = sorted((r for r in rows if r["model"] == model), key=lambda r: r["n_perms"])
        mae = ", ".join(f"S = {r['n_perms']}: {r['test_F_mae']:.3g}" for r in sel)
        out.append(["[sgdml_symmetry_cap.md](sgdml_symmetry_cap.md)", model, sel[-1]["device"],
                    bench_data.DATASETS[sel[0]["data"]].label, frames_of(sel),
                    f"test F MAE [kcal/mol/Å] by permutations kept: {mae}"])
    return out


def race_rows(results: Path) -> list[list[str]]:
    """One row per (mode, data, round, model) of ``accuracy_race[_full].json`` (sGDML's rows are shared by
    the rounds): mean test force MAE by M over the seeds present (their number in brackets)."""
    out = []
    for mode, path in (("full", results / "accuracy_race_full.json"), ("fast", results / "accuracy_race.json")):
        if not path.exists():
            continue
        rows = json.loads(path.read_text())["rows"]
        rounds = sorted({row_round(r) for r in rows if r["model"] != layout.GEOPATRA_SGDML}, reverse=True)
        for key, race_round, model in itertools.product(bench_data.DATASETS, rounds, (layout.GEOPATRA_NN, layout.MACE)):
            sel = [r for r in rows if r["data"] == key and r["model"] == model and row_round(r) == race_round]
            if sel:
                out.append(_race_row(path, mode, key, model, sel, f"{round_label(race_round)}, "))
        for key in bench_data.DATASETS:
            sel = [r for r in rows if r["data"] == key and r["model"] == layout.GEOPATRA_SGDML]
            if sel:
                out.append(_race_row(path, mode, key, layout.GEOPATRA_SGDML, sel, ""))
    return out


def _race_row(path: Path, mode: str, key: str, model: str, sel: list[dict], label: str) -> list[str]:
    """The summary row of one model's race rows on one data set (``label`` names the round)."""
    by_m: dict[int, list[float]] = {}
    for r in sel:
        by_m.setdefault(r["M"], []).append(r["test_F_mae"])
    mae = ", ".join(f"{m}: {sum(v) / len(v):.3g} ({len(v)})" for m, v in sorted(by_m.items()))
    label = ("smoke test, " if mode == "fast" else "") + label
    how = "same frames, exact solve" if model == layout.GEOPATRA_SGDML else "equal wall-clock"
    device = "CPU x86_64, 1 thread" + ("" if model == layout.GEOPATRA_SGDML else ", own core")
    return [f"[{path.stem}.md]({path.stem}.md)", model, device, bench_data.DATASETS[key].label,
            frames_of(sel), f"{label}{how}; test F MAE [kcal/mol/Å] by M (seeds): {mae}"]


def holdout_rows(results: Path) -> list[list[str]]:
    """One row per data set of ``holdout_check.json``: the race's models on frames no choice saw."""
    path = results / "holdout_check.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["rows"]
    out = []
    for key in bench_data.DATASETS:
        cells = sorted({(r["M"], r["round"]) for r in rows if r["data"] == key})
        if not cells:
            continue
        parts = []
        for m, race_round in cells:
            mean = {}
            for model in (layout.GEOPATRA_NN, layout.MACE):
                errors = [r["held_out_F_mae"] for r in rows
                          if (r["data"], r["M"], r["round"], r["model"]) == (key, m, race_round, model)]
                mean[model] = sum(errors) / len(errors)
            parts.append(f"M = {m} (round {race_round}): {mean[layout.GEOPATRA_NN]:.3g} vs {mean[layout.MACE]:.3g}")
        n = next(r["n_held_out"] for r in rows if r["data"] == key)
        out.append(["[holdout_check.md](holdout_check.md)", f"{layout.GEOPATRA_NN} vs {layout.MACE} (race models)",
                    "CPU x86_64, 1 thread", bench_data.DATASETS[key].label, f"{n} frames outside every split",
                    "held-out test F MAE [kcal/mol/Å], GeoPaTra vs MACE: " + "; ".join(parts)])
    return out


def ablation_row(results: Path) -> list[str] | None:
    """One row for ``geopatra_ablation.json``: test force MAE of each step (mean over seeds)."""
    path = results / "geopatra_ablation.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["rows"]
    steps: dict[int, list[float]] = {}
    for r in rows:
        steps.setdefault(r["step"], []).append(r["test_F_mae"])
    mae = ", ".join(f"{i}: {sum(v) / len(v):.3g}" for i, v in sorted(steps.items()))
    return ["[geopatra_ablation.md](geopatra_ablation.md)", "GeoPaTra (recipe and layer options)",
            "CPU x86_64, 1 thread, own core", bench_data.DATASETS["ala3"].label, frames_of(rows),
            f"{rows[0]['budget_s']:.0f} s per run; test F MAE [kcal/mol/Å] by step: {mae}"]


def preconditioner_row(results: Path) -> list[str] | None:
    """One row for ``preconditioners.json``: its device, problems and their exact frames."""
    path = results / "preconditioners.json"
    if not path.exists():
        return None
    payload = json.loads(path.read_text())
    problems = payload["problems"]
    return ["[preconditioners.md](preconditioners.md)", "geopatra-sGDML PCG (random / leverage / pivoted Cholesky)",
            payload["device"], "; ".join(p["name"] for p in problems), "; ".join(p["frames"] for p in problems),
            "CG iterations and time vs k and selection"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()
    from experiments.provenance import provenance_lines

    table = []
    for study, mode, payload in load(args.results_dir):
        table += {"learning_curves": learning_rows, "training_cost": cost_rows,
                  "inference": inference_rows}[study](mode, payload["rows"])
    table += symmetry_rows(args.results_dir)
    table += race_rows(args.results_dir)
    table += holdout_rows(args.results_dir)
    if (row := ablation_row(args.results_dir)) is not None:
        table.append(row)
    if (row := preconditioner_row(args.results_dir)) is not None:
        table.append(row)
    lines = [
        "# Benchmark results", "",
        *(line for line in provenance_lines("cpu") if not line.startswith("Device")), "",
        "Regenerated by `make bench` (fast mode on CPU: every study, then this file) or "
        "`make bench-full` (GPU). Each study is one script under `experiments/`; its markdown holds the "
        "command, device, versions, date and full tables. Frames are named by split file (under "
        "`experiments/work/bench/splits/`, regenerated identically from the seed) and by the sha256 of "
        "their indices. Units: kcal/mol, kcal/mol/Å.", "",
        *reporting.table(["study", "model", "device", "data", "exact frames", "result"], table), "",
        "Other results: [sgdml_vs_reference.md](sgdml_vs_reference.md), [sgdml_iterative.md](sgdml_iterative.md), "
        "[transformer_scaling.md](transformer_scaling.md), [md_drift.md](md_drift.md), "
        "[md_drift_large.md](md_drift_large.md), [md_drift_round4.md](md_drift_round4.md), "
        "[ef_cost.md](ef_cost.md), [long_range.md](long_range.md).", "",
    ]
    out = args.results_dir / "README.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
