"""Long-range study (issue 9): does a conjugated donor–bridge–acceptor molecule need global attention?

    OMP_NUM_THREADS=1 nice -n 10 python -m experiments.long_range.run [--fast | --full] [--device cuda]
        [--stages label,train,evaluate,report] [--molecules A,B] [--runs global,cutoff3] [--workers N]
        [--work-dir DIR] [--results-dir DIR]

Stages (each skips the work whose outputs exist, so an interrupted run resumes):

* ``label``: GFN2-xTB Langevin MD of the push–pull stilbene and its saturated control with
  ``geopatra label`` (independent trajectories on ``--workers`` processes, merged), the shared split,
  donor/acceptor atoms, and the reference donor–acceptor force coupling. Needs tblite and RDKit.
* ``train``: GeoPaTra global and with cutoff 8, 5, 3 Å (same config otherwise) and sGDML, through
  ``geopatra fit``, ``--workers`` runs at a time; the GeoPaTra variants again with another seed.
* ``evaluate``: test errors per atom group, the coupling of every model, attention of the global models.
* ``report``: ``<results-dir>/long_range.md``, ``long_range_errors.png``, ``long_range_attention.png``.

``--fast`` (default) fits in an hour on a 2-core CPU, labelling included; ``--full`` labels 3,200
frames per molecule and trains bigger models for longer, meant for a GPU (``--device cuda``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

from experiments.layout import ROOT
from experiments.long_range.modes import MODES
from experiments.long_range.molecules import SMILES

STAGES = ("label", "train", "evaluate", "report")
logger = logging.getLogger("long_range")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--fast", dest="mode", action="store_const", const="fast", help="CPU-sized study (default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full", help="full study (GPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (training and evaluation)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--workers", type=int, default=2, help="parallel labelling / training processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process (evaluate)")
    parser.add_argument("--molecules", default=",".join(SMILES), help="comma-separated subset of the molecules")
    parser.add_argument(
        "--runs", help="comma-separated subset of the runs to train and evaluate (e.g. global,cutoff3); default all"
    )
    parser.add_argument("--work-dir", type=Path, help="default: experiments/work/long_range_<mode>")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "results")
    args = parser.parse_args(argv)
    mode = MODES[args.mode or "fast"]
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    molecules = [m.strip() for m in args.molecules.split(",") if m.strip()]
    from experiments.long_range.training import run_names

    every_run = run_names(mode)
    runs = every_run if args.runs is None else [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [s for s in stages if s not in STAGES] + [m for m in molecules if m not in SMILES]
    unknown += [r for r in runs if r not in every_run]
    if unknown:
        parser.error(f"unknown stage(s), molecule(s) or run(s): {unknown}")
    if args.runs is not None and "report" in stages:
        parser.error("--runs is for the train and evaluate stages: the report needs every run")
    work = (args.work_dir or ROOT / "experiments" / "work" / f"long_range_{mode.name}").resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logger.info("mode %s, device %s, work %s, stages %s", mode.name, args.device, work, stages)

    import torch

    torch.set_num_threads(args.threads)
    timings = {}
    for stage in stages:
        start = time.perf_counter()
        if stage == "label":
            from experiments.long_range.labelling import label_all
            from experiments.long_range.prepare import prepare

            label_all(molecules, mode.label, work, args.workers)
            for molecule in molecules:
                prepare(molecule, work, mode)
        elif stage == "train":
            from experiments.long_range.training import train_all

            train_all(molecules, work, mode, args.device, args.workers, runs)
        elif stage == "evaluate":
            from experiments.long_range.evaluation import evaluate_all

            evaluate_all(molecules, work, args.device, mode.attention_frames, runs)
        elif stage == "report":
            from experiments.long_range.report import report
            from experiments.provenance import provenance_lines

            this = "python -m experiments.long_range.run " + shlex.join(argv if argv is not None else sys.argv[1:])
            study = f"python -m experiments.long_range.run --{mode.name} --device {args.device}"
            lines = provenance_lines(args.device, study)
            if this.strip() != study:  # stages run separately: say which call wrote the report
                lines.insert(1, f"Report written by: `{this.strip()}`  ")
            report(work, molecules, mode, args.results_dir, lines)
        timings[stage] = time.perf_counter() - start
        logger.info("stage %s: %.0f s", stage, timings[stage])
    logger.info("stage wall times [s]: %s", {k: round(v) for k, v in timings.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
