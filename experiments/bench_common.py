"""Shared by the comparison benchmarks (learning_curves.py, training_cost.py, inference.py, summary.py).

What lives here, and nowhere else:

- the benchmark datasets (:data:`DATASETS`) and the nested splits every model trains on
  (:func:`nested_splits`: one fixed validation and test set per dataset, training sets that grow as
  prefixes of one seeded permutation, saved as geopatra ``split.npz`` files);
- one runner per model family, each in its own subprocess and cached by run directory:
  :func:`run_geopatra` (geopatra-sGDML and GeoPaTra through ``geopatra fit`` / ``geopatra test``),
  :func:`run_reference` (sgdml 1.0.3 through ``sgdml_reference/run_reference.py side``) and
  :func:`run_mace` (mace-torch through ``mace_side.py``, in its own venv);
- the venv helper for the foreign tools (:func:`ensure_venv`), the command-line options every study
  shares (:func:`add_common_args`), and the report writer (:func:`write_report`).

Imports at module level are the standard library and numpy only: ``mace_side.py`` imports this module
inside the MACE venv, where geopatra is not installed.

Units everywhere: Å, kcal/mol, kcal/mol/Å (the sGDML convention; MACE is trained on the same numbers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
DEFAULT_WORK = EXPERIMENTS / "work" / "bench"
DEFAULT_RESULTS = EXPERIMENTS / "results"
REFERENCE_DIR = EXPERIMENTS / "sgdml_reference"
MACE_SIDE = EXPERIMENTS / "mace_side.py"

#: Model names as they appear in every table.
GEOPATRA_SGDML, REFERENCE_SGDML, GEOPATRA_NN, MACE = "geopatra-sGDML", "sgdml 1.0.3", "GeoPaTra", "MACE"
MODELS = (GEOPATRA_SGDML, REFERENCE_SGDML, GEOPATRA_NN, MACE)
#: Wheel folder for installing the foreign tools' venvs offline (see ensure_venv).
WHEELS_ENV = "GEOPATRA_BENCH_WHEELS"


@dataclass(frozen=True)
class BenchData:
    """A benchmark dataset: ``path`` as ``geopatra.data.read_dataset`` takes it."""

    key: str
    path: str
    label: str


DATASETS = {
    "ala3": BenchData("ala3", "bundled", "Ac-Ala3-NHMe (42 atoms), GFN2-xTB, bundled 2000 frames"),
    "ethanol": BenchData(
        "ethanol", "tests/data/ethanol_ccsd_t-train.npz", "ethanol (9 atoms), CCSD(T), sGDML file, 1000 frames"
    ),
}


# ------------------------------------------------------------------------------------ options ----


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--fast`` (default) / ``--full``, ``--device``, ``--threads``, ``--work-dir``, ``--results-dir``."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="mode", action="store_const", const="fast",
                      help="small CPU run (minutes; the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the full study (meant for a GPU machine)")
    parser.set_defaults(mode="fast")
    parser.add_argument("--device", default="cpu", help="torch device of the geopatra and MACE models")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (torch, BLAS, OpenMP)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="run directories and JSON rows")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help="markdown + PNG")


def thread_env(threads: int) -> dict[str, str]:
    """Environment of a benchmark subprocess: ``threads`` everywhere, passive OpenMP waiting (on a
    shared machine spinning OpenMP threads stall small operations), experiments/ importable."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
        OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=os.pathsep.join(filter(None, [str(EXPERIMENTS), env.get("PYTHONPATH")])),
    )
    return env


def run_checked(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` with stdout+stderr to ``log``; raise with the log's tail on failure. Returns wall [s]."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as handle:
        code = subprocess.run(cmd, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise RuntimeError(f"command failed (exit {code}): {' '.join(map(str, cmd))}\n--- {log} ---\n{tail}")
    return wall


def foreign(label: str, notes: list[str], fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or None with a note in ``notes`` when a foreign tool (its venv or its
    run) fails: a machine without that tool still gets the rest of the study."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
        text = str(err).strip().splitlines()
        notes.append(f"{label} failed and is missing from the tables: {text[0] if text else type(err).__name__}")
        print(f"WARNING: {notes[-1]}\n" + "\n".join(text[-15:]), file=sys.stderr, flush=True)
        return None


def ensure_venv(venv: Path, requirements: list[str], first: list[str] | None = None) -> Path:
    """Create ``venv`` for a tool whose pins conflict with ours (again when ``requirements``
    change: pip then installs only what is missing); returns its python.

    ``first`` is installed before ``requirements`` (torch pinned to the CPU wheel, so that a bare
    requirement cannot pull a multi-GB CUDA build). With ``$GEOPATRA_BENCH_WHEELS`` set (a folder of
    wheels, for a machine without a package index) the venv sees the packages of the interpreter
    that creates it (its CUDA torch; through a ``.pth`` file, as that interpreter may be a venv
    itself) and installs ``requirements`` from that folder only, skipping ``first``.
    """
    python = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    wanted = " ".join((first or []) + requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    wheels = os.environ.get(WHEELS_ENV)
    if not python.exists():
        flags = ["--system-site-packages"] if wheels else []
        subprocess.run([sys.executable, "-m", "venv", *flags, str(venv)], check=True)
        if wheels:  # also see the packages of the interpreter running this (itself perhaps a venv)
            import site

            purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                     check=True, capture_output=True, text=True).stdout.strip()
            Path(purelib, "_bench_parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [str(python), "-m", "pip", "install", "-q"]
    if wheels:
        subprocess.run([*pip, "--no-index", "--find-links", wheels, *requirements], check=True)
    else:
        if first:
            subprocess.run([*pip, *first], check=True)
        subprocess.run([*pip, *requirements], check=True)
    stamp.write_text(wanted)
    return python


#: What the two venvs need beyond a GPU machine's own torch, numpy, scipy, matplotlib and ASE, pinned
#: to the versions measured here (``download_wheels`` fetches them for an offline machine).
OFFLINE_WHEELS = [
    "mace-torch==0.3.16", "e3nn==0.4.4", "matscipy==1.3.1", "torch-ema==0.3", "torchmetrics==1.9.0",
    "lightning-utilities==0.15.3", "ConfigArgParse==1.9.0", "GitPython==3.2.1", "gitdb==4.0.12",
    "smmap==5.0.3", "h5py==3.16.0", "lmdb==3.0.0", "orjson==3.13.0", "opt-einsum==3.4.0",
    "opt-einsum-fx==0.1.4", "prettytable==3.18.0", "wcwidth==0.9.4", "python-hostlist==2.3.0",
    "pandas==3.1.1", "python-dateutil==4.0.0", "tzdata==2026.6", "PyYAML==6.0.4", "tqdm==4.70.1",
    "sgdml==1.0.3", "future==1.0.0", "psutil==7.2.2", "numpy==1.26.4", "ase==3.29.0", "setuptools==84.2.1",
]


def download_wheels(folder: Path) -> None:
    """Fetch :data:`OFFLINE_WHEELS` (no dependencies, no torch) for this Python into ``folder``; on the
    offline machine set ``$GEOPATRA_BENCH_WHEELS`` to it (same Python minor version required)."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder), *OFFLINE_WHEELS],
                   check=True)  # wheel, not download: sgdml and a few others are published as sdists only


# ------------------------------------------------------------------------------------- splits ----


def index_digest(index: np.ndarray) -> str:
    """First 12 hex digits of the sha256 of the frame indices (int64): names the exact frames."""
    return hashlib.sha256(np.ascontiguousarray(index, dtype=np.int64).tobytes()).hexdigest()[:12]


def nested_splits(data: BenchData, sizes: list[int], n_val: int, n_test: int, work: Path,
                  seed: int = 0) -> dict[int, Path]:
    """Split files ``<work>/splits/<data>/split_v<n_val>_t<n_test>_M<M>.npz`` for each training size.

    One seeded permutation of the frames: validation = its first ``n_val``, test = the next
    ``n_test``, training set of size M = the next M (so smaller training sets are subsets of larger
    ones, and validation and test frames are the same for every size and every model).
    """
    from geopatra.data import read_dataset
    from geopatra.data.splits import Split, check_split

    dataset = read_dataset(data.path)
    n = dataset.n_frames
    if max(sizes) + n_val + n_test > n:
        raise ValueError(f"{data.label}: {max(sizes)} + {n_val} + {n_test} frames asked, {n} available")
    order = np.random.default_rng(seed).permutation(n)
    val, test, pool = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    out = {}
    for m in sizes:
        split = Split(train=np.sort(pool[:m]), val=np.sort(val), test=np.sort(test),
                      fingerprint=dataset.fingerprint, seed=seed)
        check_split(split, dataset)
        out[m] = split.save(work / "splits" / data.key / f"split_v{n_val}_t{n_test}_M{m}.npz")
    return out


def split_facts(split_file: Path) -> dict:
    """What a report says about the frames: file, seed, sizes and index digests."""
    with np.load(split_file) as s:
        return {
            "split_file": repo_relative(split_file),
            "n_train": int(len(s["train"])), "n_val": int(len(s["val"])), "n_test": int(len(s["test"])),
            "train_sha": index_digest(s["train"]), "test_sha": index_digest(s["test"]),
            "seed": int(s["seed"]) if "seed" in s.files else None,
        }


def frames_file(data: BenchData, split_file: Path, out: Path, **extra: object) -> Path:
    """An npz for the foreign tools' sides: R, z, E, F (Å, kcal/mol) and train/val/test indices, plus
    ``extra`` (e.g. sigma, lam): the format of ``sgdml_reference/compare.py``'s split files."""
    from geopatra.data import read_dataset

    dataset = read_dataset(data.path)
    with np.load(split_file) as s:
        idx = {"train": s["train"], "val": s["val"], "test": s["test"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, R=dataset.R, z=dataset.z, E=dataset.E, F=dataset.F, **idx, **extra)
    return out


# ------------------------------------------------------------------------------------ runners ----


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
        cfg = ROOT / "configs" / "sgdml.yaml"
        prefix = "--model.init_args.potential.init_args."
        if mode == "fast":
            return cfg, [prefix + "sigmas", "[10, 20, 40]"]
        # exact solves up to 40 GiB of dense kernel (Ac-Ala3-NHMe M = 400: 19 GiB) on the GPU
        return cfg, [prefix + "sigmas", "[10, 20, 40, 80]", prefix + "memory_budget_gb", "40"]
    if mode == "fast":
        return ROOT / "configs" / "geopatra_demo.yaml", []
    return ROOT / "configs" / "geopatra.yaml", []


def run_geopatra(kind: str, data: BenchData, split_file: Path, *, mode: str, device: str, threads: int,
                 work: Path, budget: NeuralBudget | None = None) -> dict:
    """Fit + test one geopatra model ("sgdml" or "geopatra") on ``split_file``; cached row."""
    facts = split_facts(split_file)
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
    env = thread_env(threads)
    fit_wall = run_checked(fit, env, run_dir / "fit.log")
    ckpts = sorted((run_dir / "checkpoints").glob("best-*.ckpt")) or [run_dir / "checkpoints" / "last.ckpt"]
    test = [sys.executable, "-m", "geopatra.cli", "test", *common, "--ckpt_path", str(ckpts[-1])]
    run_checked(test, env, run_dir / "test.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    row = {
        "model": GEOPATRA_SGDML if kind == "sgdml" else GEOPATRA_NN, "data": data.key, "M": m, **facts,
        "test_F_mae": metrics["force_mae_kcal_mol_A"], "test_E_mae": metrics["energy_mae_kcal_mol"],
        "fit_wall_s": fit_wall, "device": device_text(device, threads), "run_dir": repo_relative(run_dir),
        "checkpoint": repo_relative(ckpts[-1]), "config": repo_relative(cfg) + (" " + " ".join(extra) if extra else ""),
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


def run_reference(data: BenchData, split_file: Path, *, sigma: float, lam: float, work: Path,
                  mode: str, perms: np.ndarray | None = None) -> dict:
    """Train + test sgdml 1.0.3 on the split's training frames at a fixed σ, λ; permutations given, or
    (``perms=None``) found by the reference's own ``find_perms`` on the training frames. Cached row."""
    sys.path.insert(0, str(REFERENCE_DIR))
    import compare  # experiments/sgdml_reference/compare.py

    facts = split_facts(split_file)
    tag = "own" if perms is None else f"S{len(perms)}"
    run_dir = work / "runs" / mode / data.key / f"reference_M{facts['n_train']}_{facts['train_sha']}_sig{sigma:g}_{tag}"
    if (row := cached_row(run_dir)) is not None:
        return row
    extra = {"sigma": sigma, "lam": lam} | ({} if perms is None else {"perms": perms})
    side_file = frames_file(data, split_file, run_dir / "frames.npz", **extra)
    out = compare.run_side("sgdml", side_file, run_dir / "side.json")
    row = {
        "model": REFERENCE_SGDML, "data": data.key, "M": facts["n_train"], **facts,
        "test_F_mae": out["test_F_mae"], "test_E_mae": out["test_E_mae"], "sigma": sigma, "lam": lam,
        "n_perms": out.get("n_perms", None if perms is None else len(perms)),
        "perms_from": "reference find_perms" if perms is None else "given",
        "train_s": out["train_seconds"], "peak_rss_gb": out["peak_rss_gb"],
        "device": f"CPU, {out['threads']}", "run_dir": repo_relative(run_dir), "version": out["version"],
    }
    (run_dir / "frames.npz").unlink()  # a copy of the dataset: not worth keeping
    return save_row(run_dir, row)


def run_sgdml_side(data: BenchData, split_file: Path, *, solver: str, sigma: float, lam: float,
                   perms: np.ndarray, work: Path, mode: str, device: str, threads: int) -> dict:
    """Train + test geopatra's SGDML with ``solver`` at a fixed σ, λ and permutations, timed in its own
    subprocess (``sgdml_reference/compare.py side``: peak RSS, and CUDA peak on a GPU). Cached row."""
    sys.path.insert(0, str(REFERENCE_DIR))
    import compare  # experiments/sgdml_reference/compare.py

    facts = split_facts(split_file)
    run_dir = (work / "runs" / mode / "cost" / data.key /
               f"{solver}_M{facts['n_train']}_{facts['train_sha']}_sig{sigma:g}_S{len(perms)}_{device}")
    if (row := cached_row(run_dir)) is not None:
        return row
    side_file = frames_file(data, split_file, run_dir / "frames.npz", sigma=sigma, lam=lam, perms=perms)
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
        "model": f"{GEOPATRA_SGDML} {solver}", "data": data.key, "M": facts["n_train"], **facts,
        "test_F_mae": out["test_F_mae"], "test_E_mae": out["test_E_mae"], "sigma": sigma, "lam": lam,
        "n_perms": len(perms), "train_s": out["train_seconds"], "peak_rss_gb": out["peak_rss_gb"],
        "peak_gpu_gb": out.get("peak_gpu_gb"), "solver": out["solver"], "iterations": out.get("iterations"),
        "device": device_text(device, threads), "run_dir": repo_relative(run_dir),
    }
    (run_dir / "frames.npz").unlink()
    return save_row(run_dir, row)


def mace_python() -> Path:
    """The MACE venv's python (created on first use: torch 2.13.0 CPU wheel first, then mace-torch)."""
    return ensure_venv(EXPERIMENTS / ".venv-mace", ["mace-torch==0.3.16"], first=["torch==2.13.0"])


def run_mace(data: BenchData, split_file: Path, *, mode: str, device: str, threads: int, work: Path,
             budget: NeuralBudget) -> dict:
    """Train MACE (``mace_run_train``) on the split's training frames and test it; cached row."""
    facts = split_facts(split_file)
    run_dir = work / "runs" / mode / data.key / f"mace_M{facts['n_train']}_{facts['train_sha']}"
    if (row := cached_row(run_dir)) is not None:
        return row
    side_file = frames_file(data, split_file, run_dir / "frames.npz")
    cmd = [str(mace_python()), str(MACE_SIDE), "train", "--frames", str(side_file), "--run-dir", str(run_dir),
           "--size", mode, "--device", device, "--epochs", str(budget.epochs(facts["n_train"])),
           "--batch-size", str(budget.batch_size), "--threads", str(threads)]
    wall = run_checked(cmd, thread_env(threads), run_dir / "side.log")
    out = json.loads((run_dir / "side.json").read_text())
    out["model_file"] = repo_relative(Path(out["model_file"]))
    row = {"model": MACE, "data": data.key, "M": facts["n_train"], **facts, **out, "fit_wall_s": wall,
           "device": device_text(device, threads), "run_dir": repo_relative(run_dir),
           "steps": budget.epochs(facts["n_train"]) * -(-facts["n_train"] // budget.batch_size),
           "batch_size": budget.batch_size}
    (run_dir / "frames.npz").unlink()
    return save_row(run_dir, row)


# ------------------------------------------------------------------------------- elapsed time ----


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


# ----------------------------------------------------------------------------------- inference ----

#: MD used for the steps/s column: velocity Verlet, this time step [fs], Maxwell-Boltzmann start.
MD_TIMESTEP_FS, MD_TEMPERATURE_K = 0.5, 300.0


#: Untimed energy + forces calls before timing: MACE on CPU needs about three to settle (42 atoms:
#: 600, 510, 315, then 230 ms per call), geopatra and the reference sgdml one.
WARMUP_CALLS = 3


def time_calculator(atoms, calc, repeats: int, md_steps: int, sync=None) -> dict:
    """Time an ASE calculator on one structure: energy + forces per call [s] (median of ``repeats``
    after ``WARMUP_CALLS`` untimed calls, the calculator's cache bypassed) and velocity-Verlet MD
    steps/s over ``md_steps`` steps (after 2 warm-up steps). ``sync`` (e.g.
    ``torch.cuda.synchronize``) is called before each clock read. Works in every venv: ASE and
    numpy only."""
    from ase import units
    from ase.calculators.calculator import all_changes
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    sync = sync or (lambda: None)
    atoms = atoms.copy()
    atoms.pbc = False
    atoms.calc = calc
    for _ in range(WARMUP_CALLS):
        calc.calculate(atoms, ["energy", "forces"], all_changes)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        calc.calculate(atoms, ["energy", "forces"], all_changes)
        sync()
        times.append(time.perf_counter() - start)
    MaxwellBoltzmannDistribution(atoms, temperature_K=MD_TEMPERATURE_K, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=MD_TIMESTEP_FS * units.fs)
    dyn.run(2)
    sync()
    start = time.perf_counter()
    dyn.run(md_steps)
    sync()
    md_wall = time.perf_counter() - start
    return {"n_atoms": len(atoms), "ef_s": float(np.median(times)), "ef_min_s": float(np.min(times)),
            "md_steps_per_s": md_steps / md_wall, "repeats": repeats, "md_steps": md_steps,
            "warmup_calls": WARMUP_CALLS}


# ------------------------------------------------------------------------------------ reports ----


def device_text(device: str, threads: int) -> str:
    """'NVIDIA H100 ... (CUDA 12.8)' or 'CPU x86_64, 1 thread(s)'."""
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    import platform

    return f"CPU {platform.processor() or platform.machine()}, {threads} thread(s)"


def run_span(rows: list[dict]) -> str:
    """When the rows' runs finished ('2026-11-25 18:49–19:35 UTC', from their bench.json files):
    cached rows may come from earlier invocations than the report."""
    import datetime

    stamps = [(ROOT / r["run_dir"] / "bench.json").stat().st_mtime for r in rows
              if "run_dir" in r and (ROOT / r["run_dir"] / "bench.json").exists()]
    if not stamps:
        return "unknown"
    first, last = (datetime.datetime.fromtimestamp(t, datetime.timezone.utc) for t in (min(stamps), max(stamps)))
    end = f"{last:%H:%M}" if first.date() == last.date() else f"{last:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M}–{end} UTC"


def repo_relative(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table; '—' for missing."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


def write_report(study: str, mode: str | None, results: Path, device: str, title: str, body: list[str],
                 rows: list[dict], figure) -> Path:
    """``<results>/<study>[_full].md`` (provenance header, body) + ``.png`` (``figure``) + ``.json``
    (the rows, for summary.py). ``mode`` None: a study without fast and full modes. Returns the
    markdown path."""
    from provenance import provenance_lines

    results.mkdir(parents=True, exist_ok=True)
    stem = results / (study if mode in ("fast", None) else f"{study}_full")
    figure.savefig(stem.with_suffix(".png"), dpi=120)
    mode_line = [] if mode is None else [f"Mode: `--{mode}`  "]
    lines = [f"# {title}", "", *provenance_lines(device), *mode_line, "", *body, "",
             f"![{study}]({stem.with_suffix('.png').name})", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    stem.with_suffix(".json").write_text(json.dumps({"study": study, "mode": mode, "rows": rows}, indent=1))
    return stem.with_suffix(".md")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "wheels":
        sys.exit("usage: python experiments/bench_common.py wheels FOLDER")
    download_wheels(Path(sys.argv[2]))
