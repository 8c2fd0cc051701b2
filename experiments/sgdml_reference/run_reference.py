"""Run the reference sGDML 1.0.3 (Chmiela et al.) for golden tests and side-by-side timings.

Usage (from the repository root; the script re-executes itself inside its own venv):

    python3 -m experiments.sgdml_reference.run_reference golden
    python3 -m experiments.sgdml_reference.run_reference compare --data DATA.npz --m 100 200

``golden``: trains the reference on fixed frames of ``tests/data/ethanol_ccsd_t-train.npz`` with a
fixed σ, λ and the reference's own symmetry detection, and writes its predictions on 200 other
frames to ``tests/data/sgdml_reference_ethanol.npz``.

``side``: one reference run of the side-by-side comparison driven by ``compare.py`` and the
benchmarks in ``experiments/`` (frames, σ, λ and optionally permutations given in an npz; without
``perms`` the reference's own ``find_perms`` runs on the training frames, timed apart from training;
timings, peak memory, test MAE and prediction speed to JSON).

``time``: energy + forces time and MD steps/s of the reference's ASE calculator on given
structures, with synthetic models of M training geometries (``experiments/inference.py``).

``compare``: for each M, trains the reference (fixed σ grid, validation on other frames) on a
42-atom dataset and records training time, peak memory (ru_maxrss), test MAE and prediction speed
into ``experiments/work/sgdml_reference_<M>.json`` (geopatra's side is run by
``compare_geopatra.py``).

The venv ``experiments/.venv-sgdml`` (gitignored) is created on first use with
``pip install sgdml==1.0.3 "numpy<2" ase`` (``environments.ensure_venv``; torch 2.13.0, the CPU
wheel, first). The reference runs with OPENBLAS_NUM_THREADS=1 as instructed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "experiments" / ".venv-sgdml"
VPY = VENV / "bin" / "python"
GOLDEN_DATA = ROOT / "tests" / "data" / "ethanol_ccsd_t-train.npz"
GOLDEN_OUT = ROOT / "tests" / "data" / "sgdml_reference_ethanol.npz"

#: Golden setup: 100 training frames, 200 test frames, fixed σ and λ.
GOLDEN_TRAIN = list(range(0, 1000, 10))
GOLDEN_TEST = [i for i in range(3, 1000, 5)][:200]
GOLDEN_SIGMA = 20.0
GOLDEN_LAMBDA = 1e-10
#: The reference venv: sgdml 1.0.3 needs numpy < 2; ASE for its calculator in the MD timings.
REQUIREMENTS = ["sgdml==1.0.3", "numpy<2", "ase"]


def ensure_venv() -> None:
    """Create the reference venv if needed (``environments.ensure_venv``), then re-exec inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    from experiments.environments import ensure_venv as make_venv

    make_venv(VENV, REQUIREMENTS, first=["torch==2.13.0"])
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # the experiments package
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=path)
    os.execve(str(VPY), [str(VPY), "-m", "experiments.sgdml_reference.run_reference", *sys.argv[1:]], env)


def make_task(R, z, E, F, idx_train, sig, lam, perms):
    """A reference ``task`` dict (what GDMLTrain.create_task builds) with our fixed choices."""
    import numpy as np

    return {
        "type": "t",
        "code_version": "1.0.3",
        "dataset_name": "ethanol",
        "dataset_theory": "unknown",
        "z": z,
        "R_train": R[idx_train],
        "F_train": F[idx_train],
        "E_train": E[idx_train],
        "idxs_train": np.asarray(idx_train),
        "md5_train": "0",
        "idxs_valid": np.asarray([], dtype=int),
        "md5_valid": "0",
        "sig": sig,
        "lam": lam,
        "use_E": True,
        "use_E_cstr": False,
        "use_sym": perms.shape[0] > 1,
        "perms": perms,
    }


def train_reference(R, z, E, F, idx_train, sig, lam, perms):
    from sgdml.train import GDMLTrain

    trainer = GDMLTrain(max_processes=1)
    return trainer.train(make_task(R, z, E, F, idx_train, sig, lam, perms))


def golden() -> None:
    import numpy as np
    import sgdml
    from sgdml.predict import GDMLPredict
    from sgdml.utils import perm as sperm

    d = np.load(GOLDEN_DATA)
    R, z, E, F = d["R"], d["z"], d["E"].reshape(-1), d["F"]
    idx_train, idx_test = np.array(GOLDEN_TRAIN), np.array(GOLDEN_TEST)
    if np.intersect1d(idx_train, idx_test).size:
        raise RuntimeError("golden train and test frames overlap")
    perms = sperm.find_perms(R[idx_train], z, max_processes=1)
    model = train_reference(R, z, E, F, idx_train, GOLDEN_SIGMA, GOLDEN_LAMBDA, perms)
    predictor = GDMLPredict(model, max_processes=1)
    E_pred, F_pred = predictor.predict(R[idx_test].reshape(len(idx_test), -1))
    np.savez(
        GOLDEN_OUT,
        train_indices=idx_train,
        test_indices=idx_test,
        sigma=GOLDEN_SIGMA,
        lam=GOLDEN_LAMBDA,
        perms=perms,
        E_pred=E_pred,
        F_pred=F_pred.reshape(len(idx_test), -1, 3),
        c=model["c"],
        alphas_F=model["alphas_F"],
        std=model["std"],
        reference_version=sgdml.__version__,
        source=str(GOLDEN_DATA.relative_to(ROOT)),
    )
    print(f"wrote {GOLDEN_OUT} ({len(perms)} permutations, c = {model['c']:.6f})")


def compare(data: Path, ms: list[int], sigmas: list[float], n_valid: int, n_test: int) -> None:
    import numpy as np
    from sgdml.predict import GDMLPredict
    from sgdml.utils import perm as sperm

    d = np.load(data)
    R, z, E, F = d["R"], d["z"], d["E"].reshape(-1), d["F"]
    out_dir = ROOT / "experiments" / "work"
    out_dir.mkdir(parents=True, exist_ok=True)
    for m in ms:
        split = split_indices(len(E), m, n_valid, n_test)
        t0 = time.perf_counter()
        perms = sperm.find_perms(R[split["train"]], z, max_processes=1)
        t_perm = time.perf_counter() - t0
        best = None
        per_sigma = []
        for sig in sigmas:
            t1 = time.perf_counter()
            model = train_reference(R, z, E, F, split["train"], sig, 1e-10, perms)
            pred = GDMLPredict(model, max_processes=1)
            _, Fv = pred.predict(R[split["valid"]].reshape(n_valid, -1))
            mae = float(np.abs(Fv.reshape(F[split["valid"]].shape) - F[split["valid"]]).mean())
            per_sigma.append({"sigma": sig, "seconds": time.perf_counter() - t1, "val_F_mae": mae})
            if best is None or mae < best[0]:
                best = (mae, sig, model)
        t_train = time.perf_counter() - t0
        pred = GDMLPredict(best[2], max_processes=1)
        t2 = time.perf_counter()
        Et, Ft = pred.predict(R[split["test"]].reshape(n_test, -1))
        t_pred = time.perf_counter() - t2
        res = {
            "M": m,
            "n_perms": int(len(perms)),
            "sigma": best[1],
            "perm_seconds": t_perm,
            "train_seconds": t_train,
            "per_sigma": per_sigma,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "test_F_mae": float(np.abs(Ft.reshape(F[split["test"]].shape) - F[split["test"]]).mean()),
            "test_E_mae": float(np.abs(Et - E[split["test"]]).mean()),
            "predict_seconds_per_frame": t_pred / n_test,
        }
        (out_dir / f"sgdml_reference_{m}.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))


def side(split_file: Path, out: Path) -> None:
    """One side of the side-by-side comparison (``compare.py``): train the reference on the frames,
    σ, λ and permutations stored in ``split_file`` (npz), time it and write a JSON to ``out``."""
    import numpy as np
    from sgdml.predict import GDMLPredict
    from sgdml.train import GDMLTrain

    d = np.load(split_file)
    R, z, E, F = d["R"], d["z"], d["E"].reshape(-1), d["F"]
    tr, te = d["train"], d["test"]
    t_perm = 0.0
    if "perms" in d.files:
        perms = d["perms"]
    else:  # the reference's own symmetry detection on the training frames (timed apart)
        from sgdml.utils import perm as sperm

        t_perm = time.perf_counter()
        perms = sperm.find_perms(R[tr], z, max_processes=1)
        t_perm = time.perf_counter() - t_perm
    timings = {"assembly": 0.0}
    original = GDMLTrain._assemble_kernel_mat

    def timed_assembly(self, *args, **kwargs):
        start = time.perf_counter()
        K = original(self, *args, **kwargs)
        timings["assembly"] += time.perf_counter() - start
        return K

    GDMLTrain._assemble_kernel_mat = timed_assembly
    t0 = time.perf_counter()
    model = train_reference(R, z, E, F, tr, float(d["sigma"]), float(d["lam"]), perms)
    t_train = time.perf_counter() - t0
    pred = GDMLPredict(model, max_processes=1)
    pred.predict(R[te[:10]].reshape(10, -1))  # warm-up
    t1 = time.perf_counter()
    Et, Ft = pred.predict(R[te].reshape(len(te), -1))
    t_pred = time.perf_counter() - t1
    import sgdml

    res = {
        "side": "sgdml",
        "version": sgdml.__version__,
        "numpy": np.__version__,
        "threads": "OPENBLAS_NUM_THREADS=" + os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
        "M": int(len(tr)),
        "n_perms": int(len(perms)),
        "perm_seconds": t_perm,
        "train_seconds": t_train,
        "assembly_seconds": timings["assembly"],
        "solve_seconds": t_train - timings["assembly"],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "test_F_mae": float(np.abs(Ft.reshape(F[te].shape) - F[te]).mean()),
        "test_E_mae": float(np.abs(Et.reshape(-1) - E[te]).mean()),
        "predict_geometries_per_s": len(te) / t_pred,
    }
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res))


def synthetic_model(z, m: int, sigma: float = 20.0, seed: int = 0) -> dict:
    """A reference ``model`` dict of M training geometries for molecule ``z`` [N], identity
    permutation only, with random descriptors and coefficients: prediction cost depends on M, N and
    the permutation count, not on the values (timing only)."""
    import numpy as np
    import sgdml

    rng = np.random.default_rng(seed)
    dim_d = len(z) * (len(z) - 1) // 2
    return {
        "type": "m", "code_version": sgdml.__version__, "dataset_name": "synthetic",
        "dataset_theory": "none", "solver_name": "none", "z": np.asarray(z), "idxs_train": np.arange(m),
        "md5_train": "0", "idxs_valid": np.arange(0), "md5_valid": "0", "n_test": 0, "md5_test": None,
        "f_err": {"mae": np.nan, "rmse": np.nan}, "e_err": {"mae": np.nan, "rmse": np.nan},
        "R_desc": rng.uniform(0.05, 1.0, size=(dim_d, m)),  # 1/r descriptors [D, M], as stored
        "R_d_desc_alpha": 1e-3 * rng.standard_normal((m, dim_d)),
        "c": 0.0, "std": 1.0, "sig": sigma, "lam": 1e-10, "alphas_F": np.zeros(m * 3 * len(z)),
        "perms": np.arange(len(z))[None], "tril_perms_lin": np.arange(dim_d), "use_E": True,
    }


def time_inference(structures: Path, m: int, repeats: int, md_steps: int, use_torch: bool,
                   processes: int, out: Path) -> None:
    """Energy + forces time and MD steps/s of the reference's ASE calculator on each structure of
    ``structures`` (extxyz), with a synthetic M-geometry model per structure; JSON rows to ``out``."""
    import ase.io
    import numpy as np
    from sgdml.intf.ase_calc import SGDMLCalculator
    from sgdml.predict import GDMLPredict

    from experiments.calculator_timing import time_calculator

    rows = []
    for atoms in ase.io.read(structures, ":"):
        model = synthetic_model(atoms.numbers, m)
        path = out.with_name(f"{out.stem}_{len(atoms)}.npz")
        np.savez(path, **{k: (np.array(v, dtype=object) if isinstance(v, dict) else v) for k, v in model.items()})
        calc = SGDMLCalculator(str(path), use_torch=use_torch)
        calc.gdml_predict = GDMLPredict(model, max_processes=processes, use_torch=use_torch)
        calc.gdml_predict.prepare_parallel(n_bulk=1)
        sync = None
        if use_torch:
            import torch

            sync = torch.cuda.synchronize if torch.cuda.is_available() else None
        row = time_calculator(atoms, calc, repeats, md_steps, sync=sync)
        rows.append({**row, "structure": atoms.info.get("name", ""), "M": m, "use_torch": use_torch})
        path.unlink()
        print(json.dumps(rows[-1]), flush=True)
    out.write_text(json.dumps(rows, indent=1))


def split_indices(n: int, m: int, n_valid: int, n_test: int) -> dict:
    """Deterministic disjoint split: train = evenly spaced, valid/test from the rest (seed 0)."""
    import numpy as np

    train = np.unique(np.linspace(0, n - 1, m).round().astype(int))
    rest = np.setdiff1d(np.arange(n), train)
    rng = np.random.default_rng(0)
    rest = rng.permutation(rest)
    return {"train": train, "valid": np.sort(rest[:n_valid]), "test": np.sort(rest[n_valid : n_valid + n_test])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("golden")
    one = sub.add_parser("side")
    one.add_argument("--split", type=Path, required=True)
    one.add_argument("--out", type=Path, required=True)
    tim = sub.add_parser("time")
    tim.add_argument("--structures", type=Path, required=True)
    tim.add_argument("--m", type=int, default=100)
    tim.add_argument("--repeats", type=int, default=5)
    tim.add_argument("--md-steps", type=int, default=20)
    tim.add_argument("--use-torch", action="store_true", help="the reference's PyTorch (GPU) path")
    tim.add_argument("--processes", type=int, default=1)
    tim.add_argument("--out", type=Path, required=True)
    cmp = sub.add_parser("compare")
    cmp.add_argument("--data", type=Path, required=True)
    cmp.add_argument("--m", type=int, nargs="+", default=[100, 200])
    cmp.add_argument("--sigmas", type=float, nargs="+", default=[20.0, 40.0, 80.0])
    cmp.add_argument("--n-valid", type=int, default=200)
    cmp.add_argument("--n-test", type=int, default=500)
    args = parser.parse_args()
    ensure_venv()
    if args.mode == "golden":
        golden()
    elif args.mode == "side":
        side(args.split, args.out)
    elif args.mode == "time":
        time_inference(args.structures, args.m, args.repeats, args.md_steps, args.use_torch,
                       args.processes, args.out)
    else:
        compare(args.data, args.m, args.sigmas, args.n_valid, args.n_test)


if __name__ == "__main__":
    main()
