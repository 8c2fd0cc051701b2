"""Evaluation cost of GeoPaTra versus molecule size: global attention (all pairs) vs a 5 Å cutoff.

For each structure (42 to 370 atoms) and each variant, a fresh subprocess builds the default model
(float32, untrained: the cost does not depend on the weights), evaluates energy + forces once to warm
up and then ``--repeats`` times, and reports the median wall time and the peak memory of the
evaluations: the increase of the process's peak resident set size (``resource.getrusage`` ru_maxrss)
over its value just before the first evaluation (model built, structure loaded). One subprocess per
measurement, so peaks do not carry over between sizes.

Usage:
    nice python -m experiments.transformer_scaling [--threads 1] [--repeats 3]

Writes experiments/results/transformer_scaling.md and .png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
GEOMETRIES = ROOT / "geometries"
VARIANTS = {"global": None, "cutoff 5 Å": 5.0}


def load_structure(name: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Positions [N, 3] Å, atomic numbers [N] and a provenance note of one benchmark structure."""
    from ase.io import read

    if name == "Ac-Ala3-NHMe":
        atoms = read(GEOMETRIES / "md22_Ac-Ala3-NHMe_98frames.extxyz", index=0)
        return atoms.positions, atoms.numbers, "MD22 frame 0"
    if name in ("DHA", "AT-AT", "buckyball-catcher"):
        atoms = read(GEOMETRIES / f"md22_{name}.xyz", index=0)
        return atoms.positions - atoms.positions.mean(axis=0), atoms.numbers, "MD22 geometry"
    if name == "maltotetraose":
        from rdkit import Chem
        from rdkit.Chem import AllChem

        smiles = "OCC1OC(OC2C(CO)OC(OC3C(CO)OC(OC4C(CO)OC(O)C(O)C4O)C(O)C3O)C(O)C2O)C(O)C(O)C1O"
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        if AllChem.EmbedMolecule(mol, randomSeed=7) != 0:
            raise RuntimeError("RDKit could not embed maltotetraose")
        AllChem.MMFFOptimizeMolecule(mol)
        pos = mol.GetConformer().GetPositions()
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
        return pos, z, "RDKit ETKDG + MMFF, C24H42O21 (the size of MD22's stachyose)"
    if name == "DWCNT":
        from ase.build import nanotube

        tubes = nanotube(5, 5, length=7) + nanotube(10, 10, length=7)
        pos = tubes.positions
        keep = np.argsort(np.abs(pos[:, 2] - pos[:, 2].mean()), kind="stable")[:370]
        pos = pos[keep] - pos[keep].mean(axis=0)
        return pos, tubes.numbers[keep], "ASE nanotube (5,5)@(10,10), 370 C atoms nearest the middle"
    raise ValueError(f"unknown structure {name!r}")


STRUCTURES = ["Ac-Ala3-NHMe", "DHA", "AT-AT", "maltotetraose", "buckyball-catcher", "DWCNT"]


def worker(name: str, variant: str, threads: int, repeats: int) -> dict:
    """Measure one (structure, variant) in this process; returns a JSON-able dict."""
    import resource
    import time

    import torch

    from geopatra.models.forces import energy_and_forces
    from geopatra.models.transformer import GeoPaTra

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pos_np, z_np, note = load_structure(name)
    model = GeoPaTra(cutoff=VARIANTS[variant]).eval()
    pos = torch.tensor(pos_np, dtype=torch.float32)
    z = torch.tensor(z_np, dtype=torch.long)
    batch = torch.zeros(len(z), dtype=torch.long)
    geometry = model.pair_geometry(pos, batch, 1)
    n_pairs = int(geometry.mask.sum())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    energy_and_forces(model, pos, z, batch, 1)  # warm-up (also counted in the memory peak)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        energy_and_forces(model, pos, z, batch, 1)
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "structure": name, "variant": variant, "n_atoms": len(z), "n_pairs": n_pairs, "note": note,
        "time_s": float(np.median(times)), "time_min_s": float(np.min(times)),
        "peak_mem_mb": (after - before) / 1024.0,  # ru_maxrss is in KiB on Linux
    }


def write_report(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    import e3nn
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    machine = (
        f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores (shared), "
        f"{args.threads} torch thread(s), no GPU"
    )
    lines = [
        "# GeoPaTra evaluation cost vs molecule size: global attention vs 5 Å cutoff",
        "",
        "- command: `nice python -m experiments.transformer_scaling "
        f"--threads {args.threads} --repeats {args.repeats}`",
        f"- machine: {machine}; {platform.platform()}",
        f"- python {platform.python_version()}, torch {torch.__version__}, e3nn {e3nn.__version__}",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        ("- model: `GeoPaTra()` defaults (float32, 64 scalar + 16x1o + 16x2e features, 3 layers, 4 heads,"
        " pair_chunk_size 32768), untrained; one molecule per call; energy + forces"
        " (`energy_and_forces`, forces by autograd)."),
        "- time: median wall time of the repeats after one warm-up call.",
        ("- peak memory: increase of the process's peak RSS (`resource.getrusage` ru_maxrss) during warm-up"
        " plus repeats over its value before the first call; a fresh subprocess per row."),
        ("- pairs: (receiver, sender) pairs that are attended to (i != j; within 5 Å for the cutoff"
        " variant, which uses neighbour lists)."),
        "",
        "| structure | atoms | variant | pairs | time [s] | peak memory [MB] | structure source |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['structure']} | {r['n_atoms']} | {r['variant']} | {r['n_pairs']} | "
            f"{r['time_s']:.3f} | {r['peak_mem_mb']:.0f} | {r['note']} |"
        )
    glob = {r["n_atoms"]: r for r in rows if r["variant"] == "global"}
    cut = {r["n_atoms"]: r for r in rows if r["variant"] != "global"}
    ratios = [f"{n}: {glob[n]['time_s'] / cut[n]['time_s']:.1f}x" for n in sorted(glob) if n in cut]
    lines += ["", f"Time ratio global / cutoff per atom count: {', '.join(ratios)}."]
    if len(glob) >= 2:
        n = np.array(sorted(glob))
        t = np.array([glob[k]["time_s"] for k in n])
        slope = np.polyfit(np.log(n), np.log(t), 1)[0]
        lines.append(f"Fitted exponent of time vs atoms (global, log-log): {slope:.2f}.")
    if len(cut) >= 2:
        n = np.array(sorted(cut))
        t = np.array([cut[k]["time_s"] for k in n])
        slope = np.polyfit(np.log(n), np.log(t), 1)[0]
        lines.append(f"Fitted exponent of time vs atoms (cutoff 5 Å, log-log): {slope:.2f}.")
    lines += [
        "",
        ("Notes: the machine is shared with other jobs, so times carry noise of tens of percent (compare"
        " trends, not single rows). RSS increases of a few MB are within allocator noise (memory freed"
        " by earlier allocations is reused without raising the peak). The global model's memory stays"
        " bounded because receivers are processed in chunks of at most `pair_chunk_size` pairs and"
        " recomputed in backward; its time grows with the number of pairs (about N²), the cutoff"
        " model's with the pairs within 5 Å (about N)."),
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant, marker in zip(VARIANTS, "os"):
        sel = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["n_atoms"])
        n = [r["n_atoms"] for r in sel]
        axes[0].loglog(n, [r["time_s"] for r in sel], marker=marker, label=variant)
        axes[1].loglog(n, [max(r["peak_mem_mb"], 1e-1) for r in sel], marker=marker, label=variant)
    if glob:
        n = np.array(sorted(glob))
        ref = glob[n[-1]]["time_s"] * (n / n[-1]) ** 2
        axes[0].loglog(n, ref, "k:", label="∝ N²")
    axes[0].set(xlabel="atoms", ylabel="energy + forces time [s]", title=machine.split(",")[0])
    axes[1].set(xlabel="atoms", ylabel="peak RSS increase [MB]", title="memory (getrusage)")
    for ax in axes:
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--structures", nargs="*", default=STRUCTURES)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "transformer_scaling")
    parser.add_argument("--worker", nargs=2, metavar=("STRUCTURE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.stdout.write(json.dumps(worker(*args.worker, args.threads, args.repeats)) + "\n")
        return
    rows = []
    for name in args.structures:
        for variant in VARIANTS:
            cmd = [sys.executable, "-m", "experiments.transformer_scaling", "--worker", name, variant,
                   "--threads", str(args.threads), "--repeats", str(args.repeats)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT.parent)
            row = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(row)
            sys.stdout.write(
                f"{row['structure']:>18} {row['n_atoms']:4d} atoms  {variant:>11}: {row['n_pairs']:7d} pairs"
                f"  {row['time_s']:7.3f} s  {row['peak_mem_mb']:7.1f} MB\n"
            )
            sys.stdout.flush()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(rows, args, args.out)


if __name__ == "__main__":
    main()
