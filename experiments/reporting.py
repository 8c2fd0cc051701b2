"""The command-line options every comparison study shares and its report writer (markdown,
PNG and the JSON rows that ``experiments.summary`` reads)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments import layout


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
    parser.add_argument("--work-dir", type=Path, default=layout.DEFAULT_WORK, help="run directories and JSON rows")
    parser.add_argument("--results-dir", type=Path, default=layout.DEFAULT_RESULTS, help="markdown + PNG")


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

    stamps = [(layout.ROOT / r["run_dir"] / "bench.json").stat().st_mtime for r in rows
              if "run_dir" in r and (layout.ROOT / r["run_dir"] / "bench.json").exists()]
    if not stamps:
        return "unknown"
    first, last = (datetime.datetime.fromtimestamp(t, datetime.timezone.utc) for t in (min(stamps), max(stamps)))
    end = f"{last:%H:%M}" if first.date() == last.date() else f"{last:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M}–{end} UTC"


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
    from experiments.provenance import provenance_lines

    results.mkdir(parents=True, exist_ok=True)
    stem = results / (study if mode in ("fast", None) else f"{study}_full")
    figure.savefig(stem.with_suffix(".png"), dpi=120)
    mode_line = [] if mode is None else [f"Mode: `--{mode}`  "]
    lines = [f"# {title}", "", *provenance_lines(device), *mode_line, "", *body, "",
             f"![{study}]({stem.with_suffix('.png').name})", ""]
    stem.with_suffix(".md").write_text("\n".join(lines))
    stem.with_suffix(".json").write_text(json.dumps({"study": study, "mode": mode, "rows": rows}, indent=1))
    return stem.with_suffix(".md")
