"""Equal-wall-clock training runs, started together and pinned one per core (``taskset``, one thread).

Shared by ``accuracy_race.py`` (GeoPaTra against MACE) and ``geopatra_ablation.py`` (GeoPaTra variants).

- GeoPaTra: ``geopatra fit --trainer.max_time`` (Lightning's timer counts the training loop,
  validation included, from the start of training), validation every ``val_every`` optimiser steps,
  then ``geopatra test`` on the checkpoint with the best validation force MAE (EMA weights).
- MACE: ``mace_side.py train --max-seconds`` (its process is killed at the budget; the best checkpoint
  written before then is the model) with its published recipe.

Each finished run leaves one JSON row (``<rows>/<name>.json``) that later invocations reuse, so a long
study can be split over sessions: commit the rows. Units: Å, kcal/mol, kcal/mol/Å, seconds.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from experiments import bench_data, environments, layout, runners

#: Validation frames are evaluated every this many optimiser steps in a timed GeoPaTra run.
VAL_EVERY = 200


@dataclass
class Job:
    """One pinned training process: its command, core, log file, and what to do when it ends."""

    name: str
    cmd: list[str]
    core: int
    log: Path
    env: dict[str, str] = field(default_factory=lambda: environments.thread_env(1))


def run_together(jobs: list[Job], *, until: str | None = None) -> dict[str, float]:
    """Start every job at once, each pinned to its core; wait for all, or, with ``until``, for that
    job, then stop the others (a load beside it, not a result). Returns wall seconds per job name;
    raises with the log's tail if one fails."""
    procs, start = {}, time.perf_counter()
    walls: dict[str, float] = {}
    for job in jobs:
        job.log.parent.mkdir(parents=True, exist_ok=True)
        handle = job.log.open("w")
        procs[job.name] = (subprocess.Popen(["taskset", "-c", str(job.core), *job.cmd], env=job.env, cwd=layout.ROOT,
                                            stdout=handle, stderr=subprocess.STDOUT), handle, job)
    order = sorted(procs, key=lambda name: name != until)  # the awaited job first
    failed = []
    for name in order:
        proc, handle, job = procs[name]
        stopped = until is not None and name != until and proc.poll() is None
        if stopped:
            proc.terminate()
        code = proc.wait()
        walls[name] = time.perf_counter() - start
        handle.close()
        if code != 0 and not stopped:
            tail = "".join(job.log.read_text(errors="replace").splitlines(keepends=True)[-20:])
            failed.append(f"{name} (exit {code}): {job.log}\n{tail}")
    if failed:
        raise RuntimeError("timed run failed: " + "\n".join(failed))
    return walls


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages of the machine."""
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------- GeoPaTra ----


def geopatra_job(name: str, data: bench_data.BenchData, split_file: Path, run_dir: Path, *, budget_s: float, seed: int,
                 core: int, overrides: list[str], config: Path) -> Job:
    """A ``geopatra fit`` of at most ``budget_s`` seconds of training (validation included)."""
    facts = bench_data.split_facts(split_file)
    hours, rest = divmod(int(budget_s), 3600)
    cmd = [sys.executable, "-m", "geopatra.cli", "fit", "--config", str(config), "--data.path", data.path,
           "--data.split_file", str(split_file), "--data.n_train", str(facts["n_train"]),
           "--data.n_val", str(facts["n_val"]), "--data.n_test", str(facts["n_test"]),
           "--seed_everything", str(seed), "--trainer.default_root_dir", str(run_dir),
           "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1",
           "--trainer.max_time", f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
           "--trainer.val_check_interval", str(VAL_EVERY), "--trainer.check_val_every_n_epoch", "null",
           "--trainer.log_every_n_steps", "50", *overrides]
    return Job(name, cmd, core, run_dir / "fit.log")


def geopatra_row(name: str, data: bench_data.BenchData, split_file: Path, run_dir: Path, *, config: Path,
                 overrides: list[str], fit_wall_s: float, budget_s: float, seed: int, core: int) -> dict:
    """Test the best checkpoint of a finished timed fit; the row with curve, steps and step time."""
    facts = bench_data.split_facts(split_file)
    ckpts = sorted((run_dir / "checkpoints").glob("best-*.ckpt")) or [run_dir / "checkpoints" / "last.ckpt"]
    test = [sys.executable, "-m", "geopatra.cli", "test", "--config", str(config), "--data.path", data.path,
            "--data.split_file", str(split_file), "--data.n_train", str(facts["n_train"]),
            "--data.n_val", str(facts["n_val"]), "--data.n_test", str(facts["n_test"]),
            "--trainer.default_root_dir", str(run_dir), "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", *overrides, "--ckpt_path", str(ckpts[-1])]
    environments.run_checked(["taskset", "-c", str(core), *test], environments.thread_env(1), run_dir / "test.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    logged = _metrics_columns(run_dir)
    steps = steps_done(run_dir, logged)
    train_f = logged.get("train/force_mae_kcal_mol_A", [])
    return {
        "model": name, "data": data.key, "M": facts["n_train"], **facts, "split_seed": facts["seed"], "seed": seed,
        "budget_s": budget_s,
        "test_F_mae": metrics["force_mae_kcal_mol_A"], "test_E_mae": metrics["energy_mae_kcal_mol"],
        "test_E_mae_per_atom": metrics["energy_mae_per_atom_kcal_mol"],
        "train_F_mae_last": train_f[-1] if train_f else None, "steps": steps,
        "step_time_s": fit_wall_s / steps if steps else None, "fit_wall_s": fit_wall_s,
        "curve": runners.elapsed_curve(run_dir), "checkpoint": layout.repo_relative(ckpts[-1]), "core": core,
        "config": layout.repo_relative(config), "overrides": " ".join(overrides),
    }


def steps_done(run_dir: Path, logged: dict[str, list[float]]) -> int:
    """Optimiser steps of a fit: its last checkpoint's, or past the last step logged in metrics.csv when that
    is later (a fit stopped by its timer after its last validation; before geopatra wrote ``last.ckpt`` at
    every validation, Lightning 2.6 kept it at the best validation)."""
    return max(_global_step(run_dir / "checkpoints" / "last.ckpt"), int(max(logged.get("step", [-1]))) + 1)


def _global_step(checkpoint: Path) -> int:
    """Optimiser steps done, as the checkpoint records them."""
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


def _metrics_columns(run_dir: Path) -> dict[str, list[float]]:
    """Every logged column of the fit's metrics.csv (version_0), as float lists."""
    columns: dict[str, list[float]] = {}
    path = run_dir / "logs" / "version_0" / "metrics.csv"
    if path.exists():
        with path.open() as handle:
            for rec in csv.DictReader(handle):
                for key, value in rec.items():
                    if value:
                        columns.setdefault(key, []).append(float(value))
    return columns


# ----------------------------------------------------------------------------------------- MACE ----


def mace_job(data: bench_data.BenchData, split_file: Path, run_dir: Path, *, budget_s: float | None, seed: int,
             core: int, epochs: int, batch_size: int, mace_args: tuple[str, ...] = (), name: str = layout.MACE) -> Job:
    """MACE (its published recipe, see ``mace_side.py``; ``mace_args``: arguments of ``mace_run_train``
    that change it) killed at ``budget_s`` at the latest (None: never)."""
    side_file = bench_data.frames_file(data, split_file, run_dir / "frames.npz")
    cmd = [str(environments.mace_python()), "-m", layout.MACE_SIDE, "train", "--frames", str(side_file), "--run-dir",
           str(run_dir),
           "--size", "fast", "--epochs", str(epochs), "--batch-size", str(batch_size), "--threads", "1",
           "--seed", str(seed), "--ema", *([] if budget_s is None else ["--max-seconds", str(budget_s)]),
           *(f"--mace-arg={arg}" for arg in mace_args)]
    return Job(name, cmd, core, run_dir / "side.log")


def seconds_per_epoch(curve: list[list[float]]) -> float:
    """MACE's epoch time [s] from a calibration run's curve ``[[elapsed_s, val F MAE], ...]``: the later
    epochs' (the first carries set-up)."""
    return (curve[-1][0] - curve[0][0]) / (len(curve) - 1)


def mace_epochs_for(budget_s: float, s_per_epoch: float) -> int:
    """MACE epochs for a run killed at ``budget_s``: 5 % more than fit, so that the kill ends it (at least 4)."""
    return max(4, int(1.05 * budget_s / s_per_epoch))


def mace_row(data: bench_data.BenchData, split_file: Path, run_dir: Path, *, fit_wall_s: float, budget_s: float,
             seed: int, core: int, batch_size: int) -> dict:
    facts = bench_data.split_facts(split_file)
    out = json.loads((run_dir / "side.json").read_text())
    out["model_file"] = layout.repo_relative(Path(out["model_file"]))
    (run_dir / "frames.npz").unlink(missing_ok=True)
    epochs_done = len(out.get("curve", []))
    steps = epochs_done * -(-facts["n_train"] // batch_size)
    return {"model": layout.MACE, "data": data.key, "M": facts["n_train"], **facts, **out, "split_seed": facts["seed"],
            "seed": seed,
            "budget_s": budget_s, "fit_wall_s": fit_wall_s, "steps": steps,
            "step_time_s": out["train_s"] / steps if steps else None, "core": core, "batch_size": batch_size}
