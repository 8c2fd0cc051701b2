"""The geopatra command end to end: configs, fit -> validate -> test, kill and resume, leakage guard."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geopatra.cli import main

ROOT = Path(__file__).parents[1]
TINY = {
    "geopatra": ROOT / "tests/configs/geopatra_tiny.yaml",
    "sgdml": ROOT / "tests/configs/sgdml_tiny.yaml",
}
DATA = str(ROOT / "tests/data/md17_ethanol_2000.npz")


def _cli(*args: str) -> None:
    main([*args])


def _val_history(run_dir: Path) -> list[dict[str, float]]:
    """Validation rows of every metrics.csv of a run, in version order."""
    rows = []
    for log in sorted((run_dir / "logs").glob("version_*/metrics.csv")):
        with open(log) as handle:
            for row in csv.DictReader(handle):
                if row.get("val/force_mae_kcal_mol_A"):
                    rows.append({k: float(v) for k, v in row.items() if v})
    return rows


@pytest.mark.parametrize("config", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses_and_builds(config):
    """Base configs alone; the overlays (MD22 molecules, recipes) on the base config of their model kind."""
    from geopatra.cli import GeopatraCLI, cli_kwargs

    args = ["--config", str(config)]
    if config.parent.name in ("md22", "recipes"):
        kind = config.stem.split("_")[0]
        args = ["--config", str(ROOT / "configs" / f"{kind}.yaml"), *args]
    cli = GeopatraCLI(**cli_kwargs(), run=False, args=args)
    if config.parent.name == "recipes":  # every value the overlay sets reaches the task or the potential
        task_args = yaml.safe_load(config.read_text())["model"]["init_args"]
        potential_args = task_args.pop("potential", {}).get("init_args", {})
        assert task_args or potential_args
        for key, value in task_args.items():
            assert cli.model.hparams[key] == value, key
        for key, value in potential_args.items():
            assert cli.model.potential.init_args[key] == value, key
    assert cli.model.potential.kind in ("geopatra", "sgdml")
    n_train = cli.datamodule.n_train
    if config.stem == "geopatra_all":  # every MD22 molecule, each with the paper's training-set size
        from geopatra.data.md22 import MD22_MOLECULES, md22_entry

        assert [md22_entry(p).name for p in cli.datamodule.path] == list(MD22_MOLECULES)
        assert n_train == [md22_entry(p).n_train for p in cli.datamodule.path]
    elif config.parent.name == "md22":
        assert n_train == int(config.read_text().split("n_train: ")[1].split()[0])
    else:
        assert n_train > 0
    if config.parent.name == "md22":
        assert cli.trainer.default_root_dir.endswith(config.stem)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["geopatra", "sgdml"])
def test_fit_validate_test_round_trip(kind, tmp_path):
    run = tmp_path / kind
    common = ["--config", str(TINY[kind]), "--data.path", DATA, "--trainer.default_root_dir", str(run)]
    _cli("fit", *common, "--trainer.log_every_n_steps", "1")
    last = run / "checkpoints" / "last.ckpt"
    assert last.is_file() and (run / "split.npz").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / "logs" / "version_0" / "config.yaml").is_file()
    assert (run / "learning_curve.png").stat().st_size > 5_000
    if kind == "geopatra":  # the training diagnostics are logged
        with open(run / "logs" / "version_0" / "metrics.csv") as handle:
            columns = set(next(csv.reader(handle)))
        for name in ("train/grad_norm", "train/lr", "train/clipped_fraction", "train/force_mae_kcal_mol_A",
                     "val/attn_senders_l0_h0", "val/attn_senders_l1_h1", "val/elapsed_s"):
            assert name in columns, name
    _cli("validate", *common, "--ckpt_path", str(last))
    _cli("test", *common, "--ckpt_path", str(last))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test_frames"] == 8
    assert metrics["model"] == kind
    assert 0 < metrics["metrics"]["force_mae_kcal_mol_A"] < 100
    assert (run / "parity.png").stat().st_size > 10_000
    # the same split is reused from the run directory, so validate/test never drew a new one
    from geopatra.data import Split

    split = Split.load(run / "split.npz")
    assert len(split.train) == 24 and len(split.test) == 8


@pytest.mark.parametrize("every", ["step", "epoch"])
def test_last_checkpoint_is_the_last_validation_when_the_error_stops_falling(tmp_path, every):
    """Learning rate 0 and EMA decay 0 (the average is the weights, bit for bit): every validation error is
    the same, so the best checkpoint stays at the first; last.ckpt must still hold the last step (6 steps
    per epoch: 24 frames, batch 4)."""
    import torch

    config = tmp_path / "tiny.yaml"
    text = TINY["geopatra"].read_text()
    assert text.count("decay: 0.9\n") == 1
    config.write_text(text.replace("decay: 0.9\n", "decay: 0.0\n"))
    run = tmp_path / "run"
    schedule = (["--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null",
                 "--trainer.max_epochs", "1"] if every == "step" else ["--trainer.max_epochs", "2"])
    _cli("fit", "--config", str(config), "--data.path", DATA, "--trainer.default_root_dir", str(run),
         "--model.init_args.lr", "0.0", "--model.init_args.min_lr", "0.0", *schedule)
    steps = {"step": 6, "epoch": 12}[every]
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert torch.load(best, map_location="cpu", weights_only=False)["global_step"] < steps  # no improvement
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == steps


@pytest.mark.slow
def test_leakage_guard_refuses_training_frames(tmp_path, capsys):
    from geopatra.errors import SplitError

    run = tmp_path / "run"
    common = ["--config", str(TINY["geopatra"]), "--data.path", DATA]
    _cli("fit", *common, "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "1")
    other = tmp_path / "other"  # a new run dir draws a different split of the same file
    test = ["test", *common, "--data.seed", "7", "--data.n_test", "1968", "--trainer.default_root_dir", str(other),
            "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    with pytest.raises(SplitError, match="were in the training set"):
        main([*test, "--traceback"])
    assert main(test) == 2  # as the user sees it: one line, exit status 2
    assert "error: SplitError:" in capsys.readouterr().err


def _fit_subprocess(run: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "tests"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "geopatra.cli", "fit", "--config", str(TINY["geopatra"]),
           "--data.path", DATA, "--trainer.default_root_dir", str(run), "--trainer.max_epochs", "4",
           *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    """6 steps per epoch; SIGKILL after step 15 (mid epoch 3), resume from last.ckpt (end of epoch 2).

    Tolerance: 1e-9 relative on the final validation metrics. The resumed run replays the same
    frames in the same order (epoch-seeded shuffling) from restored weights, EMA, optimiser, scheduler
    and RNG states, so on one CPU thread it must agree to rounding.
    """
    straight = _fit_subprocess(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = _fit_subprocess(
        tmp_path / "resumed",
        "--trainer.callbacks+=kill_switch.KillAtStep", "--trainer.callbacks.step=15",
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (tmp_path / "resumed/checkpoints/last.ckpt").is_file()
    resumed = _fit_subprocess(tmp_path / "resumed", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _val_history(tmp_path / "straight"), _val_history(tmp_path / "resumed")
    assert a[-1]["epoch"] == b[-1]["epoch"] == 3
    for key in ("val/force_mae_kcal_mol_A", "val/energy_mae_kcal_mol"):
        assert b[-1][key] == pytest.approx(a[-1][key], rel=1e-9)


def test_print_config_shows_the_resolved_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _cli("fit", "--config", str(ROOT / "configs/sgdml.yaml"), "--print_config")
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "class_path: geopatra.models.sgdml.SGDML" in out
    assert "seed_everything: 0" in out and "inference_mode: false" in out


def test_help_lists_every_subcommand_and_no_predict(capsys):
    from geopatra.cli import SUBCOMMANDS

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "md", "label", "summary", "compare"):
        assert f"  {name} " in out and name in SUBCOMMANDS
    assert "predict" not in out
    assert main(["predict", "--config", str(TINY["geopatra"])]) == 2
    assert "unknown subcommand 'predict'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["fit", "validate", "test", "md", "label", "summary", "compare"])
def test_every_subcommand_help_works(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_geopatra_errors_print_one_line_unless_asked(tmp_path, capsys, monkeypatch):
    missing = str(tmp_path / "missing.npz")
    monkeypatch.delenv("GEOPATRA_TRACEBACK", raising=False)
    assert main(["summary", missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.npz" in err[0]
    from geopatra.errors import GeopatraError

    with pytest.raises(GeopatraError):
        main(["summary", missing, "--traceback"])
    monkeypatch.setenv("GEOPATRA_TRACEBACK", "1")
    with pytest.raises(GeopatraError):
        main(["summary", missing])
