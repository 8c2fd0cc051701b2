"""GeoPaTra under Lightning DDP on 2 CPU processes (gloo): the validation errors of all frames (not of
one process's shard), one split file and report, and checkpoints that move between 1 and 2 processes.

Lightning's DDP launcher re-runs the command line in each process, so the CLI runs as a subprocess.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[1]
TINY = str(ROOT / "tests/configs/geopatra_tiny.yaml")
DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "geopatra.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def geopatra(*args: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]


def validation_metrics(run_dir: Path) -> dict[str, float]:
    """The last row of validation metrics a `geopatra validate` logged."""
    (path,) = run_dir.glob("logs/version_*/metrics.csv")
    with path.open() as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/force_mae_kcal_mol_A")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("val/") and v}


def test_two_processes_report_the_errors_of_all_frames(tmp_path) -> None:
    fit = tmp_path / "fit"
    geopatra("fit", "--config", TINY, "--trainer.default_root_dir", str(fit), "--trainer.max_epochs", "1")
    checkpoint, split = str(fit / "checkpoints" / "last.ckpt"), str(fit / "split.npz")
    common = ["--config", TINY, "--data.split_file", split, "--data.eval_batch_size", "2", "--ckpt_path", checkpoint]
    geopatra("validate", *common, "--trainer.default_root_dir", str(tmp_path / "one"))
    geopatra("validate", *common, *DDP, "--trainer.default_root_dir", str(tmp_path / "two"))
    one, two = validation_metrics(tmp_path / "one"), validation_metrics(tmp_path / "two")
    for name in ("val/force_mae_kcal_mol_A", "val/force_rmse_kcal_mol_A", "val/energy_mae_kcal_mol"):
        assert two[name] == pytest.approx(one[name], rel=1e-6), name  # float32 model: round-off only
    geopatra("test", *common, *DDP, "--trainer.default_root_dir", str(tmp_path / "two"))
    report = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert report["n_test_frames"] == 8  # both processes' frames in the one report


def test_a_ddp_checkpoint_resumes_in_one_process(tmp_path) -> None:
    run = tmp_path / "run"
    geopatra("fit", "--config", TINY, *DDP, "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1")
    assert (run / "split.npz").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    import torch

    def steps() -> int:
        return torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]

    under_ddp = steps()  # 24 frames, 2 processes, batches of 4: 3 steps
    geopatra("fit", "--config", TINY, "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "2",
             "--ckpt_path", str(run / "checkpoints" / "last.ckpt"))
    assert steps() == under_ddp + 6  # the second epoch in one process: 6 steps


def test_sgdml_shares_its_solve_between_two_processes(tmp_path) -> None:
    """sGDML under --trainer.strategy ddp: the iterative solve split over 2 processes gives the
    coefficients and validation errors of 1 process, to the round-off of float64 CG."""
    import torch

    sgdml = ["--config", str(ROOT / "tests/configs/sgdml_tiny.yaml"),
             "--model.init_args.potential.init_args.solver", "iterative",
             "--model.init_args.potential.init_args.solver_tol", "1e-12"]
    geopatra("fit", *sgdml, "--trainer.default_root_dir", str(tmp_path / "one"))
    geopatra("fit", *sgdml, *DDP, "--trainer.default_root_dir", str(tmp_path / "two"))

    def alphas(run: str) -> torch.Tensor:
        checkpoint = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=False)
        return checkpoint["state_dict"]["potential.alphas"]

    one, two = alphas("one"), alphas("two")
    assert torch.linalg.vector_norm(two - one) <= 1e-8 * torch.linalg.vector_norm(one)
    for name, value in validation_metrics(tmp_path / "one").items():
        assert validation_metrics(tmp_path / "two")[name] == pytest.approx(value, rel=1e-6), name


def test_the_kernel_model_refuses_a_strategy_that_cannot_share_its_solve(tmp_path) -> None:
    done = run_cli("fit", "--config", str(ROOT / "tests/configs/sgdml_tiny.yaml"), "--trainer.accelerator", "cpu",
                   "--trainer.devices", "2", "--trainer.strategy", "ddp_find_unused_parameters_true",
                   "--trainer.default_root_dir", str(tmp_path / "run"))
    assert done.returncode == 2
    assert "error: ConfigurationError:" in done.stderr and "--trainer.strategy ddp" in done.stderr
    # refused before a second process starts: a process group torn down by an error can abort (SIGABRT)
    assert "Initializing distributed" not in done.stdout + done.stderr
