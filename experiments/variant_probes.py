"""What the variant probes (``overfit_probe.py`` for GeoPaTra, ``mace_probe.py`` for MACE) share: their
command line, which variants are still to run, their pairs of runs and their result rows."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from experiments import bench_data, layout


def parse_args(description: str, n_variants: int) -> argparse.Namespace:
    """The probes' arguments: data, M, budget, variants, seed, the cores of a pair, work and results."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", choices=sorted(bench_data.DATASETS), default="ethanol")
    parser.add_argument("--train", type=int, default=50, help="training frames M")
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per run")
    parser.add_argument("--variants", type=int, nargs="+", default=list(range(n_variants)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, nargs="+", default=[0, 1],
                        help="cores of a pair's runs (one core: run beside another probe on the other)")
    parser.add_argument("--work-dir", type=Path, default=layout.EXPERIMENTS / "work" / "race")
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS)
    args = parser.parse_args()
    if len(set(args.cores)) != len(args.cores):
        parser.error(f"--cores must be distinct, got {args.cores}")
    if bad := [v for v in args.variants if not 0 <= v < n_variants]:
        parser.error(f"no variant {bad}: 0-{n_variants - 1}")
    return args


def row_path(rows_dir: Path, data: str, m: int, budget: float, variant: int, seed: int) -> Path:
    return rows_dir / f"{data}_M{m}_b{budget:g}_v{variant}_seed{seed}.json"


def pairs_to_run(args: argparse.Namespace, rows_dir: Path) -> Iterator[list[int]]:
    """The asked variants without a row yet, as many at a time as there are cores."""
    todo = [v for v in args.variants
            if not row_path(rows_dir, args.data, args.train, args.budget, v, args.seed).exists()]
    width = len(args.cores)
    return (todo[k : k + width] for k in range(0, len(todo), width))


def save_row(args: argparse.Namespace, rows_dir: Path, variant: int, name: str, row: dict) -> None:
    """Write a variant's row and print its test force MAE."""
    path = row_path(rows_dir, args.data, args.train, args.budget, variant, args.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    print(f"v{variant} {name}: test F MAE {row['test_F_mae']:.3f} kcal/mol/Å", flush=True)
