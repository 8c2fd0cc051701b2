"""One runner per model family, each in its own subprocess and cached by run directory:
:func:`run_geopatra` (geopatra-sGDML and GeoPaTra through ``geopatra fit`` / ``geopatra test``),
:func:`run_reference` (sgdml 1.0.3 through ``sgdml_reference/compare.py``), :func:`run_mace`
(mace-torch through ``experiments.mace_side``, in its own venv); and the validation curves they log.

Units everywhere: Å, kcal/mol, kcal/mol/Å (the sGDML convention; MACE is trained on the same numbers)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments import bench_data, environments, layout, reporting


@dataclass(frozen=True)
class NeuralBudget:
    """Training budget of the neural models: optimizer steps at ``batch_size`` molecules per step."""

    steps: int
    batch_size: int = 8

    def epochs(self, m: int) -> int:
        return max(1, -(-self.steps * self.batch_size // m))


def cached_row(run_dir: Path) -> dict | None:
    path = run_dir / "bench.json"
    if path.exists():
        row = json.loads(path.read_text())
        row["reused"] = True
        return row
    return None


def save_row(run_dir: Path, row: dict) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "bench.json").write_text(json.dumps(row, indent=1))
    return row


def geopatra_config(kind: str, mode: str) -> tuple[Path, list[str]]:
    """Base config and overrides of one geopatra model in one mode (fast: the demo-sized GeoPaTra
    and a 3-value σ grid; full: configs/geopatra.yaml, and sGDML with 4 σ and a 40 GiB budget)."""
    if kind == "sgdml":
        cfg = layout.ROOT / "configs" / "sgdml.yaml"
        prefix = layout.POTENTIAL_ARG
        if mode == "fast":
            return cfg, [prefix + "sigmas", "[10, 20, 40]"]
        # exact solves up to 40 GiB of dense kernel (Ac-Ala3-NHMe M = 400: 19 GiB) on the GPU
        return cfg, [prefix + "sigmas", "[10, 20, 40, 80]", prefix + "memory_budget_gb", "40"]
    if mode == "fast":
        return layout.ROOT / "configs" / "geopatra_demo.yaml", []
    return layout.ROOT / "configs" / "geopatra.yaml", []


def run_geopatra(kind: str, data: bench_data.BenchData, split_file: Path, *, mode: str, device: str, threads: int,
                 work: Path, budget: NeuralBudget | None = None) -> dict:
    """Fit + test one geopatra model ("sgdml" or "geopatra") on ``split_file``; cached row."""
    facts = bench_data.split_facts(split_file)
    m = facts["n_train"]
    run_dir = work / "runs" / mode / data.key / f"{kind}_M{m}_{facts['train_sha']}"
    if (row := cached_row(run_dir)) is not None:
        return row
    cfg, extra = geopatra_config(kind, mode)
    accelerator = "gpu" if device.startswith("cuda") else "cpu"
    common = ["--config", str(cfg), "--data.path", data.path, "--data.split_file", str(split_file),
              "--data.n_train", str(m), "--data.n_val", str(facts["n_val"]), "--data.n_test", str(facts["n_test"]),
              "--trainer.default_root_dir", str(run_dir), "--trainer.accelerator", accelerator,
              "--trainer.enable_progress_bar", "false", *extra]
    fit = [sys.executable, "-m", "geopatra.cli", "fit", *common]
    if kind == "geopatra":
        if budget is None:
            raise ValueError("run_geopatra: a GeoPaTra run needs a NeuralBudget")
        fit += ["--trainer.max_epochs", str(budget.epochs(m)), "--trainer.max_steps", str(budget.steps),
                "--data.batch_size", str(budget.batch_size)]
    env = environments.thread_env(threads)
    fit_wall = environments.run_checked(fit, env, run_dir / "fit.log")
    ckpts = sorted((run_dir / "checkpoints").glob("best-*.ckpt")) or [run_dir / "checkpoints" / "last.ckpt"]
    test = [sys.executable, "-m", "geopatra.cli", "test", *common, "--ckpt_path", str(ckpts[-1])]
    environments.run_checked(test, env, run_dir / "test.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    row = {
        "model": layout.GEOPATRA_SGDML if kind == "sgdml" else layout.GEOPATRA_NN, "data": data.key, "M": m, **facts,
        "test_F_mae": metrics["force_mae_kcal_mol_A"], "test_E_mae": metrics["energy_mae_kcal_mol"],
        "fit_wall_s": fit_wall, "device": reporting.device_text(device, threads),
        "run_dir": layout.repo_relative(run_dir), "checkpoint": layout.repo_relative(ckpts[-1]),
        "config": layout.repo_relative(cfg) + (" " + " ".join(extra) if extra else ""),
    }
    if kind == "sgdml":
        import torch

        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
        row["sigma"] = float(state["potential.sigma"])
        row["lam"] = float(state["potential.lam"])
        row["n_perms"] = int(state["potential.n_perms"])
    else:
        row["curve"] = elapsed_curve(run_dir)
        row["steps"], row["batch_size"] = budget.steps, budget.batch_size
    return save_row(run_dir, row)


def run_reference(data: bench_data.BenchData, split_file: Path, *, sigma: float, lam: float, work: Path,
                  mode: str, perms: np.ndarray | None = None) -> dict:
    """Train + test sgdml 1.0.3 on the split's training frames at a fixed σ, λ; permutations given, or
    (``perms=None``) found by the reference's own ``find_perms`` on the training frames. Cached row."""
    from experiments.sgdml_reference import compare

    facts = bench_data.split_facts(split_file)
    tag = "own" if perms is None else f"S{len(perms)}"
    run_dir = work / "runs" / mode / data.key / f"reference_M{facts['n_train']}_{facts['train_sha']}_sig{sigma:g}_{tag}"
    if (row := cached_row(run_dir)) is not None:
        return row
    extra = {"sigma": sigma, "lam": lam} | ({} if perms is None else {"perms": perms})
    side_file = bench_data.frames_file(data, split_file, run_dir / "frames.npz", **extra)
    out = compare.run_side("sgdml", side_file, run_dir / "side.json")
    row = {
        "model": layout.REFERENCE_SGDML, "data": data.key, "M": facts["n_train"], **facts,
        "test_F_mae": out["test_F_mae"], "test_E_mae": out["test_E_mae"], "sigma": sigma, "lam": lam,
        "n_perms": out.get("n_perms", None if perms is None else len(perms)),
        "perms_from": "reference find_perms" if perms is None else "given",
        "train_s": out["train_seconds"], "peak_rss_gb": out["peak_rss_gb"],
        "device": f"CPU, {out['threads']}", "run_dir": layout.repo_relative(run_dir), "version": out["version"],
    }
    (run_dir / "frames.npz").unlink()  # a copy of the dataset: not worth keeping
    return save_row(run_dir, row)


def run_sgdml_side(data: bench_data.BenchData, split_file: Path, *, solver: str, sigma: float, lam: float,
                   perms: np.ndarray, work: Path, mode: str, device: str, threads: int) -> dict:
    """Train + test geopatra's SGDML with ``solver`` at a fixed σ, λ and permutations, timed in its own
    subprocess (``sgdml_reference/compare.py side``: peak RSS, and CUDA peak on a GPU). Cached row."""
    from experiments.sgdml_reference import compare

    facts = bench_data.split_facts(split_file)
    run_dir = (work / "runs" / mode / "cost" / data.key /
               f"{solver}_M{facts['n_train']}_{facts['train_sha']}_sig{sigma:g}_S{len(perms)}_{device}")
    if (row := cached_row(run_dir)) is not None:
        return row
    side_file = bench_data.frames_file(data, split_file, run_dir / "frames.npz", sigma=sigma, lam=lam, perms=perms)
    env_threads = {k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    saved = {k: os.environ.get(k) for k in env_threads}
    os.environ.update(env_threads)
    try:
        out = compare.run_side("geopatra", side_file, run_dir / "side.json", threads,
                               solver=solver, device=None if device == "cpu" else device)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    row = {
        "model": f"{layout.GEOPATRA_SGDML} {solver}", "data": data.key, "M": facts["n_train"], **facts,
        "test_F_mae": out["test_F_mae"], "test_E_mae": out["test_E_mae"], "sigma": sigma, "lam": lam,
        "n_perms": len(perms), "train_s": out["train_seconds"], "peak_rss_gb": out["peak_rss_gb"],
        "peak_gpu_gb": out.get("peak_gpu_gb"), "solver": out["solver"], "iterations": out.get("iterations"),
        "device": reporting.device_text(device, threads), "run_dir": layout.repo_relative(run_dir),
    }
    (run_dir / "frames.npz").unlink()
    return save_row(run_dir, row)


def run_mace(data: bench_data.BenchData, split_file: Path, *, mode: str, device: str, threads: int, work: Path,
             budget: NeuralBudget) -> dict:
    """Train MACE (``mace_run_train``) on the split's training frames and test it; cached row."""
    facts = bench_data.split_facts(split_file)
    run_dir = work / "runs" / mode / data.key / f"mace_M{facts['n_train']}_{facts['train_sha']}"
    if (row := cached_row(run_dir)) is not None:
        return row
    side_file = bench_data.frames_file(data, split_file, run_dir / "frames.npz")
    cmd = [str(environments.mace_python()), "-m", layout.MACE_SIDE, "train", "--frames", str(side_file), "--run-dir",
           str(run_dir),
           "--size", mode, "--device", device, "--epochs", str(budget.epochs(facts["n_train"])),
           "--batch-size", str(budget.batch_size), "--threads", str(threads)]
    wall = environments.run_checked(cmd, environments.thread_env(threads), run_dir / "side.log")
    out = json.loads((run_dir / "side.json").read_text())
    out["model_file"] = layout.repo_relative(Path(out["model_file"]))
    row = {"model": layout.MACE, "data": data.key, "M": facts["n_train"], **facts, **out, "fit_wall_s": wall,
           "device": reporting.device_text(device, threads), "run_dir": layout.repo_relative(run_dir),
           "steps": budget.epochs(facts["n_train"]) * -(-facts["n_train"] // budget.batch_size),
           "batch_size": budget.batch_size}
    (run_dir / "frames.npz").unlink()
    return save_row(run_dir, row)


def elapsed_curve(run_dir: Path) -> list[list[float]]:
    """``[[elapsed_s, val force MAE], ...]`` from a GeoPaTra run's metrics.csv (``val/elapsed_s``:
    wall time since the start of fit, logged by the task at each validation)."""
    import csv

    curve = []
    for path in sorted((run_dir / "logs").glob("version_*/metrics.csv")):  # fit and test logs
        with path.open() as handle:
            for rec in csv.DictReader(handle):
                t, f = rec.get("val/elapsed_s"), rec.get("val/force_mae_kcal_mol_A")
                if t and f:
                    curve.append([float(t), float(f)])
    return curve


def time_to_reach(curve: list[list[float]], target: float) -> float | None:
    """First elapsed time [s] at which the validation force MAE is <= ``target``; None if never."""
    return next((t for t, f in curve if f <= target), None)
