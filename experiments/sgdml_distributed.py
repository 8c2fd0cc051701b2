"""The sGDML matrix-free product split over processes: measured 1 -> P processes, estimated at MD22 scale.

    # CPU, here: 1 and 2 processes (gloo), bundled Ac-Ala3-NHMe
    python -m experiments.sgdml_distributed --processes 1 2 --frames 200 1000 --perms 27
    # a GPU machine (never run here), one process per GPU (NCCL):
    python -m experiments.sgdml_distributed --device cuda --processes 1 2 4 8 --frames 1000 --dry-run
    # the paper estimate only (flops and memory per rank)
    python -m experiments.sgdml_distributed --estimate

Each process builds the same kernel (:class:`SGDMLKernel`) and times ``DistributedKernel.matvec`` (its
rows of ``K v`` plus the all-gather), median of ``--repeats`` after one untimed product, one torch
thread per process on CPU. ``--dry-run`` runs one product per configuration and checks it against
the one-process product (to 1e-10), which is what to run first on a new machine. Rows go to
``experiments/results/sgdml_distributed/``, the report to ``experiments/results/sgdml_distributed.md``
(+ .png, .json). The estimate counts, per rank, the GEMM flops of one product (4 GEMMs of
``2 (M/P) M T`` flops with ``T = Σ_c cosets_c D_c``), the coefficient work (``(M/P) M S`` entries), and
the memory of the geometry (replicated), the product temporaries and the Nyström factor (replicated:
``k n`` float64 with ``k`` the preconditioner rank).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path

import numpy as np

from experiments import bench_data, layout, reporting

STUDY = "sgdml_distributed"


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    import torch
    import torch.distributed as dist

    from geopatra.data import read_dataset
    from geopatra.models.sgdml import SGDMLKernel, find_permutations
    from geopatra.models.sgdml.distributed import DistributedKernel
    from geopatra.models.sgdml.pricing import candidate_groups

    cuda = args.device == "cuda"
    torch.set_num_threads(1)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        ds = read_dataset(bench_data.DATASETS["ala3"].path)
        group = [g for g in candidate_groups(find_permutations(ds.R[::10], ds.z)) if len(g) <= args.perms][-1]
        rows = []
        for m in args.frames:
            kernel = SGDMLKernel.of(torch.tensor(ds.R[:m]), torch.as_tensor(group), 20.0, device=device)
            op = DistributedKernel(kernel)
            v = torch.randn(kernel.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).to(device)
            product = op.matvec(v)
            if args.dry_run:
                reference = kernel.matvec(v)
                error = float((product - reference).abs().max() / reference.abs().max())
                if error > 1e-10:
                    raise RuntimeError(f"distributed product differs from the one-process one: {error:.2e}")
            times = []
            for _ in range(1 if args.dry_run else args.repeats):
                if cuda:
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                op.matvec(v)
                if cuda:
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - start)
            rows.append({"M": m, "S": len(group), "processes": world, "device": args.device,
                         "seconds": times, "median_s": float(np.median(times)), "frames_per_rank": op.counts})
        if rank == 0:
            Path(out).write_text(json.dumps(rows))
    finally:
        dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> list[dict]:
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        mp.spawn(worker, args=(world, port, args, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def estimate(m: int, n_atoms: int, s: int, t: int, k: int, ranks: int) -> dict:
    """Flops of one product and memory [GiB] per rank (see module docstring): ``m`` frames, ``n_atoms``
    atoms, ``s`` permutations, ``t = Σ_c cosets_c D_c``, Nyström rank ``k``, ``ranks`` processes."""
    d = n_atoms * (n_atoms - 1) // 2
    n = 3 * n_atoms * m
    rows = -(-m // ranks)
    gemm = 4 * 2 * rows * m * t
    geometry = 8 * (m * d + m * n_atoms * n_atoms * 3 + m * t)  # x, pair gradients, class copies of x
    temporaries = 8 * 6 * min(rows, 64) * m * s  # coefficient-sized arrays of one block of rows
    nystrom = 8 * 3 * k * n
    gib = 2**30
    return {"M": m, "N": n_atoms, "S": s, "T": t, "k": k, "ranks": ranks, "unknowns": n,
            "gemm_tflop": gemm / 1e12, "coefficient_entries": rows * m * s,
            "geometry_gib": geometry / gib, "temporaries_gib": temporaries / gib, "nystrom_gib": nystrom / gib}


ESTIMATES = [  # (name, M, N, S, T, k): MD22's training sizes; T and S for Ac-Ala3-NHMe's 27-element subgroup
    ("Ac-Ala3-NHMe, M = 6,000, 27 permutations", 6000, 42, 27, 1689, 6000 * 126 // 16),
    ("DWCNT, M = 800, identity", 800, 370, 1, 370 * 369 // 2, 800 * 1110 // 16),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--perms", type=int, default=27, help="largest candidate group kept")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="one checked product per configuration")
    parser.add_argument("--estimate", action="store_true", help="only the paper estimate")
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()
    rows_dir = args.results_dir / STUDY
    if not args.estimate:
        for world in args.processes:
            for row in measure(world, args):
                print(f"{world} processes, M = {row['M']}, S = {row['S']}: {row['median_s']:.3f} s", flush=True)
                if not args.dry_run:
                    rows_dir.mkdir(parents=True, exist_ok=True)
                    name = f"{args.device}_M{row['M']}_S{row['S']}_P{world}.json"
                    (rows_dir / name).write_text(json.dumps(row, indent=1))
    if not args.dry_run:
        print(write_report(rows_dir, args.results_dir))


def write_report(rows_dir: Path, results: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in sorted(rows_dir.glob("*.json"))]
    single = {(r["device"], r["M"], r["S"]): r["median_s"] for r in rows if r["processes"] == 1}
    measured = [[r["device"], r["M"], r["S"], r["processes"], f"{r['median_s']:.3f}",
                 f"{single[(r['device'], r['M'], r['S'])] / r['median_s']:.2f}"
                 if (r["device"], r["M"], r["S"]) in single else "—"] for r in rows]
    estimated = []
    for name, m, n_atoms, s, t, k in ESTIMATES:
        for ranks in (1, 4, 8):
            e = estimate(m, n_atoms, s, t, k, ranks)
            estimated.append([name, ranks, f"{e['unknowns']:,}", f"{e['gemm_tflop']:.2f}",
                              f"{e['coefficient_entries'] / 1e9:.2f}", f"{e['geometry_gib']:.2f}",
                              f"{e['nystrom_gib']:.0f}"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in sorted({(r["device"], r["M"], r["S"]) for r in rows}):
        sel = sorted((r for r in rows if (r["device"], r["M"], r["S"]) == key), key=lambda r: r["processes"])
        ax.plot([r["processes"] for r in sel], [r["median_s"] for r in sel], "o-",
                label=f"{key[0]}, M = {key[1]}, S = {key[2]}")
    ax.set(xlabel="processes", ylabel="one product K v [s]", yscale="log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    body = ["One distributed product `DistributedKernel.matvec` (each process its block of rows, then an "
            "all-gather) on the first M bundled Ac-Ala3-NHMe frames, one torch thread per process, median of "
            "the repeats. Speed-up: against one process of the same run.", "",
            *reporting.table(["device", "M", "S", "processes", "K v [s]", "speed-up"], measured), "",
            "Estimated per rank for one product (not measured; formulas in the module docstring), with "
            "the Nyström rank k = n/16:", "",
            *reporting.table(["system", "ranks", "unknowns n", "GEMM TFLOP", "coefficients [10⁹ entries]",
                       "geometry [GiB]", "Nyström factor [GiB]"], estimated)]
    return reporting.write_report(STUDY, None, results, "cpu", "sGDML: the matrix-free product across processes", body,
                           rows, fig)


if __name__ == "__main__":
    main()
