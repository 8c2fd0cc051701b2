"""Files a test run leaves in its run directory: ``metrics.json`` and ``parity.png``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch


def write_test_report(
    run_dir: str | os.PathLike,
    metrics: dict[str, float],
    predictions: list[dict[str, torch.Tensor]],
    task: Any,
    per_molecule: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Write metrics (with units in their names; ``per_molecule`` as well for a run on several
    molecules) and a parity plot of energies and forces."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = getattr(task, "run_record", None)
    n_frames = sum(len(p["frame"]) for p in predictions)
    payload = {
        "metrics": metrics,
        "n_test_frames": n_frames,
        "model": record.kind if record is not None else type(task.potential).__name__,
        "dataset": record.name if record is not None else None,
        "dataset_fingerprint": record.fingerprint if record is not None else None,
        "units": {"energy": "kcal/mol", "force": "kcal/mol/Å"},
    }
    if per_molecule:
        payload["per_molecule"] = per_molecule
    (run_dir / "metrics.json").write_text(json.dumps(payload, indent=2))
    if predictions:
        plot_parity(predictions, metrics, run_dir / "parity.png")
    return run_dir / "metrics.json"


def per_molecule_metrics(predictions: list[dict[str, torch.Tensor]], names: list[str]) -> dict[str, dict[str, float]]:
    """The test metrics of each molecule (``names[k]`` for molecule index k) from the task's test
    predictions (``molecule`` [n_mol], energies [n_mol], forces [n_atoms, 3], ``n_atoms`` [n_mol])."""
    from geopatra.metrics import ErrorAccumulator

    accumulators = {k: ErrorAccumulator() for k in range(len(names))}
    for p in predictions:
        atom_molecule = torch.repeat_interleave(p["molecule"], p["n_atoms"])
        for k in p["molecule"].unique().tolist():
            frames, atoms = p["molecule"] == k, atom_molecule == k
            accumulators[k].update(p["energy_pred"][frames], p["energy_true"][frames], p["n_atoms"][frames],
                                   p["forces_pred"][atoms], p["forces_true"][atoms])
    return {names[k]: acc.compute() for k, acc in accumulators.items() if acc.n_molecules}


def plot_parity(predictions: list[dict[str, torch.Tensor]], metrics: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cat = {key: torch.cat([p[key] for p in predictions]).numpy() for key in predictions[0]}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    e_ref = cat["energy_true"].mean()
    panels = (
        (axes[0], cat["energy_true"] - e_ref, cat["energy_pred"] - e_ref, "energy − mean [kcal/mol]",
         f"MAE {metrics['energy_mae_kcal_mol']:.3f} kcal/mol"),
        (axes[1], cat["forces_true"].ravel(), cat["forces_pred"].ravel(), "force component [kcal/mol/Å]",
         f"MAE {metrics.get('force_mae_kcal_mol_A', float('nan')):.3f} kcal/mol/Å"),
    )
    for ax, true, pred, label, title in panels:
        ax.scatter(true, pred, s=3, alpha=0.4)
        low, high = min(true.min(), pred.min()), max(true.max(), pred.max())
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(title)
    fig.suptitle(f"test set: {len(cat['energy_true'])} frames")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_runs(run_dirs: list[str]) -> str:
    """A side-by-side markdown table of the test metrics of several run directories."""
    rows = []
    for run_dir in run_dirs:
        payload = json.loads((Path(run_dir) / "metrics.json").read_text())
        rows.append((Path(run_dir).name, payload))
    header = "| metric | " + " | ".join(f"{name} ({p['model']})" for name, p in rows) + " |"
    lines = [header, "|---|" + "---:|" * len(rows)]
    for metric in rows[0][1]["metrics"] if rows else []:
        values = " | ".join(f"{p['metrics'].get(metric, float('nan')):.4f}" for _, p in rows)
        lines.append(f"| {metric} | {values} |")
    if rows:
        lines.append("| test frames | " + " | ".join(str(p["n_test_frames"]) for _, p in rows) + " |")
    return "\n".join(lines)


def plot_learning_curve(run_dir: str | os.PathLike) -> Path | None:
    """``<run_dir>/learning_curve.png``: training and validation force MAE [kcal/mol/Å] against
    optimiser step and against wall time since the start of fit, from every ``logs/version_*/metrics.csv``
    of the run. Returns the path, or None when nothing was validated yet."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    val, train = [], []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                step, elapsed = row.get("step"), row.get("val/elapsed_s")
                if row.get("val/force_mae_kcal_mol_A") and step:
                    val.append((float(step), float(elapsed or "nan"), float(row["val/force_mae_kcal_mol_A"])))
                if row.get("train/force_mae_kcal_mol_A") and step:
                    train.append((float(step), float(elapsed or "nan"), float(row["train/force_mae_kcal_mol_A"])))
    if not val:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for column, ax, label in ((0, axes[0], "optimiser step"), (1, axes[1], "wall time since fit start [s]")):
        for points, name in ((train, "training batches since the last validation"), (val, "validation")):
            if points:
                ax.plot([p[column] for p in points], [p[2] for p in points], marker=".", label=name)
        ax.set(xlabel=label, ylabel="force MAE [kcal/mol/Å]", yscale="log")
        ax.legend(fontsize=8)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    out = run_dir / "learning_curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
