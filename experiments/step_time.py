"""Training step time of GeoPaTra at the race's recipes: code trees side by side, as ratios.

    python -m experiments.step_time --code before=/tmp/before --code after=.   # two checkouts of geopatra
    python -m experiments.step_time --code eager=.:eager --code compiled=.:compiled   # one, both steps

A checkout's step is the recipe's own (``compile`` as the race sets it), or with ``:eager`` / ``:compiled``
after the path the eager double-backward step or the compiled one (``ForceFieldTask(compile=True)``) for every
recipe; the first of the 10 untimed steps compiles (its time is in the row as ``first_step_s``).

What the training loop does per batch, in each checkout's own code: energy + forces with the
double-backward graph, the backward of a force-dominated loss, gradient clipping, the optimiser of
``ForceFieldTask.configure_optimizers`` and the weight average of the ``ExponentialMovingAverage``
callback (Lightning's own per-step overhead, logging included, is not in it). Frames of the race's data
sets (ethanol 9 atoms, the peptide 42). Each (checkout, recipe) runs in its own process with one torch
thread on core 0, the checkouts in turns over ``--rounds`` so that a change of load falls on all alike;
a time is the median over turns of the median step of a turn. Writes
experiments/results/step_time.{md,png,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

#: the race's cells timed: label -> (data set key of experiments.accuracy_race, M, frames file)
CELLS = {
    "ethanol, M = 200 (round 10)": ("ethanol", 200, "tests/data/ethanol_ccsd_t-train.npz"),
    "ethanol, M = 50 (round 11)": ("ethanol", 50, "tests/data/ethanol_ccsd_t-train.npz"),
    "peptide, M = 200 (round 8)": ("ala3", 200, "tests/data/md22_Ac-Ala3-NHMe_5frames.xyz"),
}


def race_recipe(key: str, m: int) -> dict:
    """GeoPaTra's arguments, frames per batch and learning rate in the race's cell (key, M):
    configs/geopatra.yaml with ``accuracy_race.geopatra_overrides`` applied."""
    import yaml

    from experiments import layout
    from experiments.accuracy_race import CONFIG, geopatra_overrides

    config = yaml.safe_load(CONFIG.read_text())
    potential = dict(config["model"]["init_args"]["potential"]["init_args"])
    batch, lr = config["data"]["batch_size"], config["model"]["init_args"]["lr"]
    compile = bool(config["model"]["init_args"].get("compile", False))
    args = geopatra_overrides(key, m)
    for flag, text in zip(args[::2], args[1::2]):
        value = yaml.safe_load(text)
        if flag.startswith(layout.POTENTIAL_ARG):
            potential[flag.removeprefix(layout.POTENTIAL_ARG)] = value
        elif flag == "--data.batch_size":
            batch = value
        elif flag == "--model.init_args.lr":
            lr = value
        elif flag == "--model.init_args.compile":
            compile = bool(value)
        else:
            raise ValueError(f"step_time cannot apply the race's override {flag} {text}")
    return {"potential": potential, "batch": batch, "lr": lr, "compile": compile}


def worker(cell: str, recipe: dict, steps: int, warmup: int) -> dict:
    """Time ``steps`` training steps of ``recipe`` (:func:`race_recipe`) on ``cell``'s frames with the
    geopatra on ``sys.path`` (run in a subprocess: it imports nothing else of this checkout)."""
    import functools
    import time

    import torch

    import geopatra
    from geopatra.callbacks import ExponentialMovingAverage
    from geopatra.models.forces import energy_and_forces
    from geopatra.models.transformer import GeoPaTra
    from geopatra.task import ForceFieldTask

    torch.set_num_threads(1)
    torch.manual_seed(0)
    path, batch_size = CELLS[cell][2], recipe["batch"]
    if path.endswith(".npz"):
        data = np.load(path)
        R, z = data["R"][:batch_size], data["z"]
    else:
        import ase.io

        frames = ase.io.read(path, index=f":{batch_size}")
        R, z = np.stack([a.positions for a in frames]), frames[0].numbers
    task = ForceFieldTask(potential=GeoPaTra(**recipe["potential"]), lr=recipe["lr"], amsgrad=True)
    optimizer = task.configure_optimizers()
    ema = ExponentialMovingAverage(decay=0.99)
    ema.setup(None, task, "fit")
    n = len(z)
    pos = torch.as_tensor(R.reshape(-1, 3), dtype=torch.float32)
    zz = torch.as_tensor(np.tile(z, batch_size), dtype=torch.long)
    batch = torch.arange(batch_size).repeat_interleave(n)
    target = torch.randn_like(pos)
    params = list(task.potential.parameters())
    if recipe["compile"]:
        from geopatra.models.compiled_forces import CompiledEnergyAndForces

        training_energy_and_forces = CompiledEnergyAndForces(task.potential)
    else:
        training_energy_and_forces = functools.partial(energy_and_forces, task.potential, training=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        energy, forces = training_energy_and_forces(pos, zz, batch, batch_size)
        loss = (energy / n - energy.detach().mean() / n).square().mean() + 100.0 * (forces - target).square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        ema._average_model.update_parameters(task)

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"recipe": cell, "step_s": float(np.median(times)), "geopatra": str(Path(geopatra.__file__).parent),
            "atoms": n, "batch": batch_size, "first_step_s": first, "compiled": recipe["compile"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", action="append", metavar="NAME=CHECKOUT",
                        help="a checkout of geopatra to time (repeatable); ratios are to the first")
    parser.add_argument("--rounds", type=int, default=4,
                        help="turns per checkout and recipe (even: each goes first as often)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per turn (median), after 10 untimed")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)  # cell, recipe as JSON
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker[0], json.loads(args.worker[1]), args.steps, warmup=10)))
        return
    from experiments import layout

    if not args.code:
        parser.error("name at least one --code NAME=CHECKOUT")
    codes, modes = {}, {}
    for item in args.code:
        name, path = item.split("=", 1)
        path, _, modes[name] = path.partition(":")
        if modes[name] not in ("", "eager", "compiled"):
            parser.error(f"--code {item}: the step after ':' must be eager or compiled, got {modes[name]!r}")
        codes[name] = Path(path).resolve()
    recipes = {cell: race_recipe(key, m) for cell, (key, m, _) in CELLS.items()}
    #: what each checkout runs per recipe: the recipe, its step forced eager or compiled by the checkout's mode
    specs = {(cell, name): recipe if not modes[name] else {**recipe, "compile": modes[name] == "compiled"}
             for cell, recipe in recipes.items() for name in codes}
    turns: dict[tuple[str, str], list[float]] = {(r, name): [] for r in CELLS for name in codes}
    where: dict[str, str] = {}
    first_steps: dict[tuple[str, str], list[float]] = {}
    names = list(codes)
    for turn in range(args.rounds):
        for recipe in CELLS:
            for name in names[turn % len(names):] + names[: turn % len(names)]:  # each checkout first in turn
                row = _run_worker(codes[name], recipe, specs[(recipe, name)], args.steps)
                first_steps.setdefault((recipe, name), []).append(row["first_step_s"])
                where[name] = row["geopatra"]
                turns[(recipe, name)].append(row["step_s"])
                print(f"{recipe}, {name}: {1e3 * row['step_s']:.1f} ms", flush=True)
    rows = []
    for recipe in CELLS:
        first = float(np.median(turns[(recipe, names[0])]))
        for name in names:
            step = float(np.median(turns[(recipe, name)]))
            rows.append({"recipe": recipe, "code": name, "checkout": where[name], "commit": _commit(codes[name]),
                         "step_s": step,
                         "turns_s": turns[(recipe, name)], "ratio_to_first": step / first,
                         "batch": recipes[recipe]["batch"], "compiled": specs[(recipe, name)]["compile"],
                         "first_step_turns_s": first_steps[(recipe, name)]})
    write_report(args, rows, names, args.results_dir or layout.DEFAULT_RESULTS)


def _run_worker(checkout: Path, cell: str, recipe: dict, steps: int) -> dict:
    """One turn: ``worker`` in a subprocess importing geopatra from ``checkout``, one thread on core 0."""
    from experiments import layout

    env = {**os.environ, "PYTHONPATH": str(checkout), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["taskset", "-c", "0", sys.executable, str(Path(__file__).resolve()), "--steps", str(steps),
                          "--worker", cell, json.dumps(recipe)], cwd=layout.ROOT, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"timing {cell} with {checkout} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(row["geopatra"]).is_relative_to(checkout):
        raise RuntimeError(f"imported geopatra from {row['geopatra']}, not from {checkout}")
    return row


def _commit(checkout: Path) -> str:
    """The checkout's git commit, with ``+changes`` when its working tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def write_report(args: argparse.Namespace, rows: list[dict], names: list[str], results: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from experiments import reporting

    torch.set_num_threads(1)  # as in the workers: the report's header states the threads of the timed runs
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        ax.bar(np.arange(len(CELLS)) + k * width, [1e3 * r["step_s"] for r in rows if r["code"] == name], width,
               label=name)
    ax.set_xticks(np.arange(len(CELLS)) + width * (len(names) - 1) / 2, list(CELLS), fontsize=8)
    ax.set_ylabel("training step [ms], one thread")
    ax.legend(fontsize=8)
    fig.tight_layout()
    header = ["recipe", "frames per step", "code", "step", "step [ms]", f"ratio to {names[0]}",
              "first step, turn 1 / last [s]", "commit"]
    table = [[r["recipe"], r["batch"], r["code"], "compiled" if r["compiled"] else "eager", f"{1e3 * r['step_s']:.1f}",
              f"{r['ratio_to_first']:.2f}", f"{r['first_step_turns_s'][0]:.1f} / {r['first_step_turns_s'][-1]:.1f}",
              f"`{r['commit']}`"] for r in rows]
    body = [__doc__.split("\n\n", 2)[2].strip().replace("\n", " "), "",
            f"{args.rounds} turns per checkout and recipe, each the median of {args.steps} steps after 10 untimed.",
            "", *reporting.table(header, table)]
    path = reporting.write_report("step_time", None, results, "cpu", "GeoPaTra training step time, side by side",
                                  body, rows, fig)
    print(path)
    return path


if __name__ == "__main__":
    main()
