"""The MACE side of the benchmarks; runs inside ``experiments/.venv-mace`` (mace-torch pins e3nn 0.4.4).

    <venv-mace>/bin/python -m experiments.mace_side train --frames F.npz --run-dir D --size fast \
        --device cpu --epochs 30 --batch-size 8
    <venv-mace>/bin/python -m experiments.mace_side time --structures S.extxyz --model D/mace.model \
        --device cpu --repeats 5 --md-steps 20 --out T.json

``train``: writes the frames' train/val sets as extxyz in eV and eV/Å (``REF_energy``,
``REF_forces``; MACE's defaults, loss weights included, are tuned for eV), runs ``mace_run_train``
on them (with its Stage Two, which raises the energy weight for the last quarter of the epochs;
``--ema`` adds its EMA of the weights, decay 0.99; ``--max-seconds`` kills it that long after it
starts training and turns the last checkpoint written before into the model),
reads the validation curve (elapsed time, force MAE) from its log, and tests (``MACECalculator``)
whichever of its two models, stage one or Stage Two, has the lower validation force MAE; errors in
kcal/mol and kcal/mol/Å. ``evaluate``: that selection and test again for a finished run.
Writes ``<run-dir>/side.json`` (``evaluate --out``: the result alone, elsewhere). ``time``: energy +
forces time and MD steps/s through the ``MACECalculator`` on each structure
(``calculator_timing.time_calculator``).

Called (``python -m experiments.mace_side`` in the MACE venv) by ``runners.run_mace``, ``timed_runs``
and ``inference``; not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ase import units as ase_units

from experiments.calculator_timing import time_calculator

#: Model sizes: fast = a small MACE for CPU minutes, full = MACE with 128 channels (GPU).
SIZES = {
    "fast": ["--num_channels", "32", "--max_L", "1", "--num_interactions", "2", "--correlation", "3"],
    "full": ["--num_channels", "128", "--max_L", "1", "--num_interactions", "2", "--correlation", "3"],
}
R_MAX = 5.0  # Å, MACE's default cutoff
EV_PER_KCAL_MOL = ase_units.kcal / ase_units.mol
NAME = "mace"
EPOCH_LINE = re.compile(r"^(\S+ \S+) INFO: Epoch (\d+): .*MAE_E=\s*([\d.]+) meV, MAE_F=\s*([\d.]+) meV")
START_LINE = re.compile(r"^(\S+ \S+) INFO: Started training")


def write_extxyz(path: Path, R: np.ndarray, z: np.ndarray, E: np.ndarray, F: np.ndarray) -> None:
    """Frames (R Å, E kcal/mol, F kcal/mol/Å) as extxyz with ``REF_energy`` [eV], ``REF_forces`` [eV/Å]."""
    from ase import Atoms
    from ase.io import write

    frames = []
    for r, e, f in zip(R, E, F):
        atoms = Atoms(numbers=z, positions=r, pbc=False)
        atoms.info["REF_energy"] = float(e) * EV_PER_KCAL_MOL
        atoms.arrays["REF_forces"] = np.asarray(f, dtype=float) * EV_PER_KCAL_MOL
        frames.append(atoms)
    write(path, frames, format="extxyz")


def _stamp(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def read_curve(log: Path) -> tuple[list[list[float]], float]:
    """``[[elapsed_s, val force MAE kcal/mol/Å], ...]`` and the training time [s] from MACE's log."""
    start, curve = None, []
    for line in log.read_text().splitlines():
        if start is None and (m := START_LINE.match(line)):
            start = _stamp(m.group(1))
        elif start is not None and (m := EPOCH_LINE.match(line)):
            curve.append([_stamp(m.group(1)) - start, float(m.group(4)) / 1e3 / EV_PER_KCAL_MOL])
    return curve, (curve[-1][0] if curve else float("nan"))


def train(args: argparse.Namespace) -> None:
    import torch

    d = np.load(args.frames)
    R, z, E, F = d["R"], d["z"], d["E"].reshape(-1), d["F"]
    run = args.run_dir
    run.mkdir(parents=True, exist_ok=True)
    clear_previous_run(run)
    for subset in ("train", "val"):
        idx = d[subset]
        write_extxyz(run / f"{subset}.xyz", R[idx], z, E[idx], F[idx])
    cmd = [
        str(Path(sys.executable).with_name("mace_run_train")), "--name", NAME, "--seed", str(args.seed),
        "--train_file", str(run / "train.xyz"), "--valid_file", str(run / "val.xyz"),
        "--energy_key", "REF_energy", "--forces_key", "REF_forces", "--E0s", "average",
        "--model", "MACE", *SIZES[args.size], "--r_max", str(R_MAX), *args.mace_arg,
        "--batch_size", str(args.batch_size), "--valid_batch_size", "16",
        "--max_num_epochs", str(args.epochs),
        "--device", "cuda" if args.device.startswith("cuda") else "cpu", "--default_dtype", "float32",
        "--error_table", "TotalMAE", "--stage_two", "--work_dir", str(run), "--num_workers", "0",
        "--eval_interval", "1", *(["--ema", "--ema_decay", "0.99"] if args.ema else []),
    ]
    start = time.perf_counter()
    log = run / "logs" / f"{NAME}_run-{args.seed}.log"
    killed = run_limited(cmd, run, log, args.max_seconds)
    if killed:  # no training epochs left: MACE loads its last checkpoints and writes the models
        stage_two = any(run.glob("checkpoints/*_swa.pt"))
        epoch = last_checkpoint_epoch(run)
        restart = [*cmd, "--restart_latest", "--max_num_epochs", str(epoch)]
        if not stage_two:  # Stage Two never started: tell MACE it starts after the end
            restart += ["--start_swa", str(epoch + 1)]
        with (run / "mace_restart.log").open("w") as handle:
            subprocess.run(restart, check=True, stdout=handle, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    curve, train_s = read_curve(log)
    res = {"killed_at_budget": killed, "max_seconds": args.max_seconds, "ema": args.ema,
        **evaluate(d, run, args.device), "curve": curve, "train_s": train_s, "mace_wall_s": wall,
        "epochs": args.epochs, "size": args.size,
        "mace_args": " ".join([*SIZES[args.size], "--r_max", str(R_MAX), *args.mace_arg]),
        "mace_version": __import__("mace").__version__, "e3nn_version": __import__("e3nn").__version__,
        "torch_version": torch.__version__,
    }
    (run / "side.json").write_text(json.dumps(res, indent=1))
    for subset in ("train", "val"):
        (run / f"{subset}.xyz").unlink()


def clear_previous_run(run: Path) -> None:
    """Remove what an earlier MACE run left in ``run``: MACE appends to its logs (the curve would mix
    two runs) and would find the old checkpoints."""
    for folder in ("logs", "checkpoints", "results"):
        shutil.rmtree(run / folder, ignore_errors=True)
    for model in run.glob("*.model"):
        model.unlink()


def run_limited(cmd: list[str], run: Path, log: Path, max_seconds: float | None) -> bool:
    """Run ``mace_run_train``; with ``max_seconds``, kill it that long after its log says training
    started (its data preparation is not counted, as Lightning's timer does not count GeoPaTra's).
    Returns whether it was killed."""
    with (run / "mace_run_train.log").open("w") as handle:
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT)
        deadline, killed = None, False
        while proc.poll() is None:
            time.sleep(0.5)
            if max_seconds is None:
                continue
            if deadline is None and log.exists() and any(START_LINE.match(x) for x in log.read_text().splitlines()):
                deadline = time.perf_counter() + max_seconds
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                proc.wait()
                killed = True
        if not killed and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd)
    return killed


def last_checkpoint_epoch(run: Path) -> int:
    """The epoch of MACE's latest checkpoint (``checkpoints/<name>_run-<seed>_epoch-<n>[_swa].pt``)."""
    epochs = [int(m.group(1)) for p in run.glob("checkpoints/*.pt") if (m := re.search(r"_epoch-(\d+)", p.name))]
    if not epochs:
        raise RuntimeError(f"{run}: MACE was killed before it wrote a checkpoint; give it a longer budget")
    return max(epochs)


def errors(calc, R: np.ndarray, z: np.ndarray, E: np.ndarray, F: np.ndarray) -> tuple[float, float]:
    """Energy MAE [kcal/mol] and force MAE [kcal/mol/Å] of a MACE calculator on frames R [n, N, 3] Å."""
    from ase import Atoms

    e_err, f_err = [], []
    for r, e, f in zip(R, E, F):
        atoms = Atoms(numbers=z, positions=r, pbc=False)
        atoms.calc = calc
        e_err.append(abs(atoms.get_potential_energy() / EV_PER_KCAL_MOL - e))
        f_err.append(np.abs(atoms.get_forces() / EV_PER_KCAL_MOL - f).mean())
    return float(np.mean(e_err)), float(np.mean(f_err))


def evaluate(d, run: Path, device: str) -> dict:
    """Test errors of the model MACE leaves that has the lower validation force MAE: the stage-one
    model (``mace.model``, MACE's best by validation loss) or the final Stage Two model
    (``mace_stagetwo.model``). Selection on the validation frames, as for GeoPaTra's best epoch."""
    import torch

    R, z, E, F = d["R"], d["z"], d["E"].reshape(-1), d["F"]
    val, test = d["val"], d["test"]
    candidates = [p for p in (run / f"{NAME}.model", run / f"{NAME}_stagetwo.model") if p.exists()]
    scores = {p: errors(calculator(p, device), R[val], z, E[val], F[val]) for p in candidates}
    best = min(candidates, key=lambda p: scores[p][1])
    test_E, test_F = errors(calculator(best, device), R[test], z, E[test], F[test])
    model = torch.load(best, map_location="cpu", weights_only=False)
    return {
        "test_F_mae": test_F, "test_E_mae": test_E, "model_file": str(best),
        "val_F_mae_by_model": {p.name: scores[p][1] for p in candidates},
        "val_E_mae_by_model": {p.name: scores[p][0] for p in candidates},
        "n_params": int(sum(q.numel() for q in model.parameters())),
    }


def calculator(model_path: Path, device: str):
    """MACE's own ASE calculator (eV, Å)."""
    from mace.calculators import MACECalculator

    return MACECalculator(model_paths=str(model_path), device=device, default_dtype="float32")


def time_structures(args: argparse.Namespace) -> None:
    import ase.io
    import torch

    torch.set_num_threads(args.threads)
    calc = calculator(args.model, args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    rows = []
    for atoms in ase.io.read(args.structures, ":"):
        row = time_calculator(atoms, calc, args.repeats, args.md_steps, sync=sync)
        rows.append({**row, "structure": atoms.info.get("name", "")})
        print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--frames", type=Path, required=True)
    tr.add_argument("--run-dir", type=Path, required=True)
    tr.add_argument("--size", choices=sorted(SIZES), default="fast")
    tr.add_argument("--epochs", type=int, required=True)
    tr.add_argument("--batch-size", type=int, default=8)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--ema", action="store_true", help="MACE's EMA of the weights (decay 0.99)")
    tr.add_argument("--max-seconds", type=float, default=None, help="kill training after this long [s]")
    tr.add_argument("--mace-arg", action="append", default=[],
                    help="a mace_run_train argument after the size's (the later one wins): --mace-arg=--lr=0.005")
    ev = sub.add_parser("evaluate")
    ev.add_argument("--frames", type=Path, required=True)
    ev.add_argument("--run-dir", type=Path, required=True)
    ev.add_argument("--out", type=Path, default=None, help="write the result here, not into <run-dir>/side.json")
    tm = sub.add_parser("time")
    tm.add_argument("--structures", type=Path, required=True)
    tm.add_argument("--model", type=Path, required=True)
    tm.add_argument("--repeats", type=int, default=5)
    tm.add_argument("--md-steps", type=int, default=20)
    tm.add_argument("--out", type=Path, required=True)
    for p in (tr, ev, tm):
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.mode == "train":
        import torch

        torch.set_num_threads(args.threads)
        train(args)
    elif args.mode == "evaluate":  # re-select and re-test the models of a finished run
        result = evaluate(np.load(args.frames), args.run_dir, args.device)
        if args.out is not None:
            args.out.write_text(json.dumps(result, indent=1))
        else:
            side = args.run_dir / "side.json"
            side.write_text(json.dumps({**json.loads(side.read_text()), **result}, indent=1))
    else:
        time_structures(args)


if __name__ == "__main__":
    main()
