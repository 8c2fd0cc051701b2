"""Timings of geopatra's sGDML kernel operator on 42-atom Ac-Ala3-NHMe geometries (float64, CPU).

Usage (from the repository root):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m experiments.sgdml_reference.bench_kernel \
        --threads 1 --out experiments/work/sgdml_bench_t1.json

Geometries: the 98 MD22 frames of ``experiments/geometries/md22_Ac-Ala3-NHMe_98frames.extxyz``,
repeated with Gaussian noise (0.03 Å) up to 1000 frames; random labels (timing only). The
permutation group is the 6 permutations of one methyl group's hydrogens (S = 6, as detected for
the bundled set). Measures: one ``matvec`` (K v) at M = 100, 200, 1000; the dense lower triangle
(``fill_dense``, what the exact solver assembles) at M = 100, 200; ``diagonal``; ``columns`` of 8
frames; prediction (energies + autograd forces) in geometries/s at M = 100, 200.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from pathlib import Path

import ase.io
import numpy as np
import torch

from geopatra.models.sgdml import SGDML, SGDMLKernel

ROOT = Path(__file__).resolve().parents[2]
GEOMETRIES = ROOT / "experiments" / "geometries" / "md22_Ac-Ala3-NHMe_98frames.extxyz"


def geometries(n_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions [n_frames, 42, 3] Å, z [42], and the 6 permutations of one methyl's hydrogens."""
    frames = ase.io.read(GEOMETRIES, ":")
    R0 = np.stack([a.positions for a in frames])
    z = frames[0].numbers
    rng = np.random.default_rng(0)
    reps = -(-n_frames // len(R0))
    R = np.concatenate([R0 + rng.normal(scale=0.03, size=R0.shape) for _ in range(reps)])[:n_frames]
    dist = np.linalg.norm(R0[0][:, None] - R0[0][None], axis=-1)
    for c in np.flatnonzero(z == 6):
        hs = [h for h in np.flatnonzero(z == 1) if dist[c, h] < 1.2]
        if len(hs) == 3:
            break
    perms = []
    for p in itertools.permutations(hs):
        q = np.arange(len(z))
        q[hs] = p
        perms.append(q)
    return R, z, np.array(perms)


def timed(fn, repeat: int = 1) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sigma", type=float, default=2.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    R_all, z, perms = geometries(1100)
    res: dict = {"threads": args.threads, "machine": platform.processor() or platform.machine(),
                 "torch": torch.__version__, "n_atoms": len(z), "n_perms": len(perms), "rows": []}
    for m in (100, 200, 1000):
        op = SGDMLKernel.of(torch.as_tensor(R_all[:m]), torch.as_tensor(perms), args.sigma)
        v = torch.randn(op.n, dtype=torch.float64)
        row = {"M": m, "n": op.n, "matvec_s": timed(lambda op=op, v=v: op.matvec(v), repeat=3 if m < 1000 else 1)}
        row["diagonal_s"] = timed(op.diagonal)
        row["columns_8_frames_s"] = timed(lambda op=op: op.columns(torch.arange(8 * 3 * len(z))))
        if m <= 200:
            K = torch.empty(op.n, op.n, dtype=torch.float64)
            start = time.perf_counter()
            op.fill_dense(K, lower_only=True)
            row["fill_lower_s"] = time.perf_counter() - start
            del K
            model = SGDML(sigmas=[args.sigma])
            model.R_train = torch.as_tensor(R_all[:m])
            model.alphas = torch.randn(op.n, dtype=torch.float64)
            model.perms = torch.as_tensor(perms)
            model.n_perms = torch.tensor(len(perms))
            model.z = torch.as_tensor(z)
            model.sigma = torch.tensor(args.sigma, dtype=torch.float64)
            Rq = R_all[-100:]
            row["predict_geometries_per_s"] = len(Rq) / timed(lambda model=model, Rq=Rq: model.predict(Rq))
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
