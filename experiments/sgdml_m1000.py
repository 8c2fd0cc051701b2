"""sGDML on the bundled Ac-Ala3-NHMe at M = 1,000 with the shipped ``configs/sgdml.yaml``: which
permutations its price cap keeps, how long the fit takes and how accurate it is, against the
run that keeps the identity only, on the same frames (the row with the fewest permutations).

    python -m experiments.sgdml_m1000                        # the shipped config
    python -m experiments.sgdml_m1000 --label identity -- --model.init_args.potential.init_args.max_symmetries 1

(The identity row committed was run as the shipped config before the pricing fix, which kept the
identity alone: the same run as the second command.)

Runs ``geopatra fit`` then ``geopatra test`` (the README's command: 1,000 training, 100 validation,
900 test frames, split seed 0) with ``--threads`` for torch and BLAS, timed (wall clock) with the
peak RSS of each subprocess. The fit log's ``SGDML:`` lines (the price of each permutation group,
σ search, the solve) go into the report. Rows: ``experiments/results/sgdml_m1000/<label>.json``;
report ``experiments/results/sgdml_m1000.{md,png,json}`` from every row present.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from experiments import environments, layout, reporting

STUDY = "sgdml_m1000"
CONFIG = layout.ROOT / "configs" / "sgdml.yaml"
def run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS [GB] of ``cmd`` (largest child so far: the runs are sequential)."""
    start = time.perf_counter()
    with log.open("w") as handle:
        subprocess.run(cmd, env=env, cwd=layout.ROOT, stdout=handle, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6


def measure(label: str, extra: list[str], threads: int, work: Path) -> dict:
    run_dir = work / label
    common = ["--config", str(CONFIG), "--data.n_train", "1000", "--trainer.default_root_dir", str(run_dir),
              "--trainer.enable_progress_bar", "false", *extra]
    env = environments.thread_env(threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    fit_s, fit_rss = run([sys.executable, "-m", "geopatra.cli", "fit", *common], env, run_dir / "fit.log")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    run([sys.executable, "-m", "geopatra.cli", "test", *common, "--ckpt_path", str(ckpt)], env, run_dir / "test.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {"label": label, "extra": extra, "threads": threads, "n_perms": int(state["potential.n_perms"]),
            "sigma": float(state["potential.sigma"]), "test_F_mae": metrics["force_mae_kcal_mol_A"],
            "test_E_mae": metrics["energy_mae_kcal_mol"], "fit_wall_s": fit_s, "peak_rss_gb": fit_rss,
            "log": [line.split("SGDML: ", 1)[1] for line in (run_dir / "fit.log").read_text().splitlines()
                    if "SGDML: " in line],
            "run_dir": layout.repo_relative(run_dir), "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}


def write_report(rows_dir: Path, results: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    every = sorted(rows, key=lambda r: r["n_perms"])
    identity = every[0]
    header = ["run", "permutations", "σ", "test F MAE [kcal/mol/Å]", "test E MAE [kcal/mol]", "fit [min]",
              "peak RSS [GB]", f"F MAE / S = {identity['n_perms']}"]
    table = [[r["label"], r["n_perms"], f"{r['sigma']:g}", reporting.fmt(r["test_F_mae"]),
              reporting.fmt(r["test_E_mae"]), f"{r['fit_wall_s'] / 60:.1f}", f"{r['peak_rss_gb']:.1f}",
              f"{r['test_F_mae'] / identity['test_F_mae']:.2f}"] for r in every]
    body = ["The README's M = 1,000 command on the bundled peptide (1,000 training, 100 validation, 900 test "
            "frames, split seed 0) with `configs/sgdml.yaml` as shipped: before the iterative solve it prices one "
            "kernel product per permutation group and keeps the largest within `max_product_seconds`.", "",
            *reporting.table(header, table), ""]
    for r in rows:
        body += [f"Fit log of `{r['label']}` ({r['threads']} threads, finished {r['finished_utc']} UTC):", "",
                 "```", *r["log"], "```", ""]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter([r["fit_wall_s"] / 60 for r in every], [r["test_F_mae"] for r in every])
    for r in every:
        ax.annotate(f"S = {r['n_perms']}", (r["fit_wall_s"] / 60, r["test_F_mae"]))
    ax.set(xlabel="fit wall time [min]", ylabel="test force MAE [kcal/mol/Å]", title="sGDML, Ac-Ala3-NHMe, M = 1,000")
    fig.tight_layout()
    return reporting.write_report(STUDY, None, results, "cpu", "sGDML at M = 1,000: permutations kept by price",
                                  body, rows, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="shipped config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=layout.EXPERIMENTS / "work" / STUDY)
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    parser.add_argument("extra", nargs="*", help="more `geopatra fit` options (after --)")
    args = parser.parse_args()
    rows_dir = args.results_dir / STUDY
    path = rows_dir / f"{args.label.replace(' ', '_')}.json"
    if not path.exists():
        row = measure(args.label.replace(" ", "_"), args.extra, args.threads, args.work_dir) | {"label": args.label}
        rows_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(row, indent=1))
    print(write_report(rows_dir, args.results_dir))


if __name__ == "__main__":
    main()
