"""Inference: energy + forces time per structure and MD steps/s vs atom count, four force fields.

    nice python -m experiments.inference --fast                 # CPU, minutes
    python -m experiments.inference --full --device cuda        # CPU rows and GPU rows

Structures (``transformer_scaling.load_structure``): MD22 geometries of Ac-Ala3-NHMe (42 atoms), DHA
(56), AT-AT (60), buckyball catcher (148), an RDKit maltotetraose (87, stachyose-sized; skipped where
RDKit is missing) and a 370-atom double-walled nanotube; written once to
``<work-dir>/inference/structures.extxyz`` and read by every model's process.

Models, each in its own subprocess and each through its ASE calculator (what an MD user calls):

- geopatra-sGDML: ``GeoPatraCalculator`` on a synthetic model of M training geometries per molecule
  (the structure plus 0.05 Å noise, random coefficients, identity permutation);
- sgdml 1.0.3: its ``SGDMLCalculator`` (NumPy on CPU; its PyTorch path on a GPU), synthetic model of
  the same M (``sgdml_reference/run_reference.py time``);
- GeoPaTra: ``GeoPatraCalculator``, the architecture of ``configs/geopatra.yaml``, untrained; once eager
  and once with ``compile=True`` (``torch.compile``; compilation happens in the untimed warm-up calls and
  its time is reported separately);
- MACE: ``MACECalculator``, the 128-channel model of the --full learning curves (r_max 5 Å), trained
  for 2 epochs on 16 frames only to obtain a model file.

Prediction cost does not depend on the weights or kernel coefficients, only on the architecture, the
atom count and, for sGDML, on M and the number of permutations (cost ∝ M·S): these timings hold for
trained models of the same sizes. E+F time: median of ``repeats`` calls after 3 untimed ones. MD:
velocity Verlet, 0.5 fs, 300 K start, through ASE. Writes ``<results-dir>/inference[_full].{md,png,json}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from experiments import bench_data, calculator_timing, environments, layout, reporting

GEOPATRA_COMPILED = f"{layout.GEOPATRA_NN} (compiled)"
MODELS = (*layout.MODELS, GEOPATRA_COMPILED)
PLANS = {
    "fast": {"sgdml_m": 200, "repeats": 3, "md_steps": 5},
    "full": {"sgdml_m": 1000, "repeats": 5, "md_steps": 20},
}
NOISE_ANGSTROM = 0.05


# -------------------------------------------------------------------------- geopatra workers ----


def bare_checkpoint(potential, path: Path) -> Path:
    """A checkpoint file that ``geopatra.checkpoint.load_potential`` (and so ``GeoPatraCalculator``)
    reads: the record of a fit without dataset or split, plus the potential's state."""
    import torch

    from geopatra.checkpoint import CHECKPOINT_KEY
    from geopatra.run_record import RunRecord

    record = RunRecord(kind=potential.kind, init_args=dict(potential.init_args),
                       class_path=f"{type(potential).__module__}.{type(potential).__qualname__}").to_dict()
    state = {f"potential.{k}": v for k, v in potential.state_dict().items()}
    torch.save({CHECKPOINT_KEY: record, "state_dict": state}, path)
    return path


def synthetic_sgdml(atoms, m: int, seed: int = 0):
    """geopatra's SGDML with M noisy copies of ``atoms`` as training geometries, identity permutation
    and random coefficients (timing only)."""
    import torch

    from geopatra.models.sgdml import SGDML

    rng = np.random.default_rng(seed)
    n = len(atoms)
    model = SGDML(sigmas=[20.0], use_symmetries=False)
    f64 = torch.float64
    model.R_train = torch.as_tensor(atoms.positions[None] + rng.normal(scale=NOISE_ANGSTROM, size=(m, n, 3)), dtype=f64)
    model.alphas = torch.as_tensor(1e-3 * rng.standard_normal(3 * n * m), dtype=f64)
    model.perms = torch.arange(n)[None]
    model.n_perms = torch.tensor(1)
    model.z = torch.as_tensor(atoms.numbers, dtype=torch.long)
    model.sigma = torch.tensor(20.0, dtype=f64)
    model.train_indices = torch.arange(m)
    return model


def geopatra_transformer():
    """GeoPaTra with the architecture of configs/geopatra.yaml, untrained."""
    import yaml

    from geopatra.models.transformer import GeoPaTra

    cfg = yaml.safe_load((layout.ROOT / "configs" / "geopatra.yaml").read_text())
    return GeoPaTra(**cfg["model"]["init_args"]["potential"]["init_args"])


def worker(args: argparse.Namespace) -> None:
    """Time one geopatra model on every structure (runs in its own process)."""
    import ase.io
    import torch

    from geopatra import GeoPatraCalculator

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    rows = []
    for atoms in ase.io.read(args.structures, ":"):
        model = synthetic_sgdml(atoms, args.m) if args.worker == layout.GEOPATRA_SGDML else geopatra_transformer()
        ckpt = bare_checkpoint(model, args.out.with_name(f"{args.out.stem}_{len(atoms)}.ckpt"))
        calc = GeoPatraCalculator(ckpt, device=args.device, compile=args.compile)
        start = time.perf_counter()
        atoms.calc = calc
        atoms.get_forces()  # the first call compiles (with --compile)
        first_call_s = time.perf_counter() - start
        rows.append({**calculator_timing.time_calculator(atoms, calc, args.repeats, args.md_steps, sync=sync),
                     "structure": atoms.info.get("name", ""), "first_call_s": first_call_s,
                     "compiled": all(e.compiled for e in calc.evaluators)})
        ckpt.unlink()
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=1))


# --------------------------------------------------------------------------------- the study ----


def write_structures(path: Path, only: list[str] | None = None) -> list[str]:
    """The benchmark structures as one extxyz (``name`` and ``source`` in each frame's info);
    returns notes on structures that could not be made here."""
    import ase.io
    from ase import Atoms

    from experiments.transformer_scaling import STRUCTURES, load_structure

    frames, notes = [], []
    for name in only or STRUCTURES:
        try:
            pos, z, source = load_structure(name)
        except ImportError as err:
            notes.append(f"{name} skipped: {err}")
            continue
        frames.append(Atoms(numbers=z, positions=pos, pbc=False, info={"name": name, "source": source}))
    frames.sort(key=len)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return notes


def mace_model(args: argparse.Namespace) -> Path:
    """A 128-channel MACE model file (2 epochs on 16 Ac-Ala3-NHMe frames: weights are irrelevant)."""
    run_dir = args.work_dir / "inference" / "mace_model"
    if (run_dir / "side.json").exists():
        return Path(json.loads((run_dir / "side.json").read_text())["model_file"])
    data = bench_data.DATASETS["ala3"]
    split = bench_data.nested_splits(data, [16], 8, 8, args.work_dir)[16]
    frames = bench_data.frames_file(data, split, run_dir / "frames.npz")
    environments.run_checked([str(environments.mace_python()), "-m", layout.MACE_SIDE, "train", "--frames",
                              str(frames), "--run-dir",
                    str(run_dir), "--size", "full", "--epochs", "2", "--batch-size", "8", "--device", "cpu"],
                   environments.thread_env(args.threads), run_dir / "side.log")
    return Path(json.loads((run_dir / "side.json").read_text())["model_file"])


def measure(args: argparse.Namespace, structures: Path, notes: list[str]) -> list[dict]:
    plan = PLANS[args.mode]
    devices = ["cpu"] + ([args.device] if args.device != "cpu" else [])
    out_dir = args.work_dir / "inference" / args.mode
    out_dir.mkdir(parents=True, exist_ok=True)
    timing = ["--repeats", str(plan["repeats"]), "--md-steps", str(plan["md_steps"])]
    rows = []
    for device, threads in itertools.product(devices, args.thread_counts or [args.threads]):
        env = environments.thread_env(threads)
        tag = f"{device.replace(':', '')}_t{threads}"
        jobs = {
            layout.GEOPATRA_SGDML: [sys.executable, "-m", "experiments.inference", "--worker", layout.GEOPATRA_SGDML,
                                    "--m", str(plan["sgdml_m"])],
            layout.REFERENCE_SGDML: [sys.executable, "-m", "experiments.sgdml_reference.run_reference", "time",
                                 "--m", str(plan["sgdml_m"]), "--processes", str(threads),
                                 *(["--use-torch"] if device != "cpu" else [])],
            layout.GEOPATRA_NN: [sys.executable, "-m", "experiments.inference", "--worker", layout.GEOPATRA_NN],
            GEOPATRA_COMPILED: [sys.executable, "-m", "experiments.inference", "--worker", layout.GEOPATRA_NN,
                                "--compile"],
        }
        model_file = environments.foreign(f"{layout.MACE} model", notes, mace_model, args)
        if model_file is not None:
            jobs[layout.MACE] = [str(environments.mace_python()), "-m", layout.MACE_SIDE, "time", "--model",
                                 str(model_file)]
        for model, cmd in jobs.items():
            out = out_dir / f"{model.replace(' ', '_').replace('(', '').replace(')', '')}_{tag}.json"
            extra = [] if model == layout.REFERENCE_SGDML else ["--device", device, "--threads", str(threads)]
            cmd = [*cmd, "--structures", str(structures), "--out", str(out), *timing, *extra]
            if environments.foreign(f"{model} on {device}", notes, environments.run_checked, cmd, env,
                                    out.with_suffix(".log")) is None:
                continue
            for r in json.loads(out.read_text()):
                row = {**r, "model": model, "device": reporting.device_text(device, threads), "device_kind": device,
                       "threads": threads}
                if model in (layout.GEOPATRA_SGDML, layout.REFERENCE_SGDML):
                    row["M"] = plan["sgdml_m"]
                rows.append(row)
                print(f"{device:>5} t{threads} {model:<20} {row['structure']:>18} {row['n_atoms']:4d} atoms  E+F "
                      f"{1e3 * row['ef_s']:9.2f} ms  MD {row['md_steps_per_s']:8.2f} steps/s", flush=True)
    return rows


def write(rows: list[dict], notes: list[str], args: argparse.Namespace) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = PLANS[args.mode]
    body = [f"sGDML models: M = {plan['sgdml_m']} training geometries, identity permutation (cost grows "
            "linearly with M and with the permutation count). E+F = one energy + forces call through the "
            f"model's ASE calculator, median of {plan['repeats']} after {calculator_timing.WARMUP_CALLS} "
            "untimed calls; "
            f"MD = {plan['md_steps']} velocity-Verlet steps (0.5 fs) through ASE, after 2 warm-up steps. "
            "Neural models: GeoPaTra with the architecture of configs/geopatra.yaml (64 scalar + 16 tensor "
            "features, l <= 2, 3 layers, its radial basis and layer options, float32), MACE with 128 "
            "channels, L = 1, correlation 3, 2 interactions, r_max 5 Å (float32); weights untrained or "
            "barely trained, which does not change the cost.", ""]
    body += [f"- {n}" for n in notes]
    body += [""]
    structures = sorted({(r["n_atoms"], r["structure"]) for r in rows})
    for device in dict.fromkeys(r["device"] for r in rows):
        sel = [r for r in rows if r["device"] == device]
        body += [f"## {device}", ""]
        header = ["structure", "atoms", *(f"{m} E+F [ms]" for m in MODELS),
                  *(f"{m} MD [steps/s]" for m in MODELS)]
        table = []
        for n, name in structures:
            by = {r["model"]: r for r in sel if r["n_atoms"] == n}
            table.append([name, n] + [reporting.fmt(1e3 * by[m]["ef_s"]) if m in by else "—" for m in MODELS]
                         + [reporting.fmt(by[m]["md_steps_per_s"]) if m in by else "—" for m in MODELS])
        body += reporting.table(header, table)
        body += ["", "Ratios of E+F time in this invocation (> 1: the first-named is slower):", ""]
        ratio_rows = []
        pairs = ((layout.REFERENCE_SGDML, layout.GEOPATRA_SGDML), (layout.MACE, layout.GEOPATRA_NN),
                 (layout.GEOPATRA_NN, layout.GEOPATRA_SGDML), (layout.GEOPATRA_NN, GEOPATRA_COMPILED))
        for n, name in structures:
            by = {r["model"]: r["ef_s"] for r in sel if r["n_atoms"] == n}
            ratio_rows.append([name, n, *(f"{by[a] / by[b]:.2f}×" if a in by and b in by else "—" for a, b in pairs)])
        body += reporting.table(["structure", "atoms", "sgdml 1.0.3 / geopatra-sGDML", "MACE / GeoPaTra",
                          "GeoPaTra / geopatra-sGDML", "GeoPaTra eager / compiled"], ratio_rows)
        compiled = [r for r in sel if r["model"] == GEOPATRA_COMPILED]
        if compiled:
            body += ["", "GeoPaTra (compiled): first call (compilation) "
                     + ", ".join(f"{r['first_call_s']:.0f} s at {r['n_atoms']} atoms" for r in compiled)
                     + "; compiled code ran in every call: "
                     + ("yes" if all(r["compiled"] for r in compiled) else "NO (eager fallback)") + "."]
        body += [""]
    body += ["Notes: each process runs with the CPU thread count of its section"
             + (" (absolute times move with the machine's load, stated in the header)" if args.mode == "fast" else "")
             + ". MD steps/s include ASE's own overhead per step, "
             "so they are below 1 / (E+F time) for the fastest models. The reference sgdml's ASE calculator "
             "prepares its parallel layout once per model (`prepare_parallel`), not per call."]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for device in dict.fromkeys(r["device_kind"] for r in rows):
        for model in MODELS:
            sel = [r for r in rows if r["model"] == model and r["device_kind"] == device]
            sel.sort(key=lambda r: r["n_atoms"])
            if not sel:
                continue
            style = "-" if device == "cpu" else "--"
            label = f"{model} ({device})"
            axes[0].loglog([r["n_atoms"] for r in sel], [1e3 * r["ef_s"] for r in sel], "o" + style, label=label)
            axes[1].loglog([r["n_atoms"] for r in sel], [r["md_steps_per_s"] for r in sel], "o" + style, label=label)
    axes[0].set(xlabel="atoms", ylabel="energy + forces [ms]", title="time per structure")
    axes[1].set(xlabel="atoms", ylabel="MD steps/s", title="velocity Verlet through ASE")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return reporting.write_report("inference", args.mode, args.results_dir, args.device,
                           "Inference: energy + forces and MD speed vs atom count", body, rows, fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    reporting.add_common_args(parser)
    parser.add_argument("--worker", choices=[layout.GEOPATRA_SGDML, layout.GEOPATRA_NN], help=argparse.SUPPRESS)
    parser.add_argument("--structures", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--m", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--thread-counts", type=int, nargs="+", default=None,
                        help="measure with each of these thread counts (default: --threads)")
    parser.add_argument("--only", nargs="+", default=None, help="structure names to measure (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--md-steps", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    structures = args.work_dir / "inference" / "structures.extxyz"
    notes = write_structures(structures, args.only)
    rows = measure(args, structures, notes)
    print(f"wrote {write(rows, notes, args)}")


if __name__ == "__main__":
    main()
