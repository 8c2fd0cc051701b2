"""Fine-tuning: a new run that starts from a checkpoint's weights (``--model.init_args.init_from``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geopatra.checkpoint import load_potential, load_weights_for_fine_tuning
from geopatra.cli import main
from geopatra.errors import CheckpointError, ElementError
from geopatra.models.transformer import GeoPaTra

ROOT = Path(__file__).parents[1]
TINY = ROOT / "tests/configs/geopatra_tiny.yaml"
ETHANOL_NPZ = ROOT / "tests/data/md17_ethanol_2000.npz"
ETHANOL_XYZ = ROOT / "tests/data/rmd17_ethanol_100.xyz"
TINY_ARCH = {"num_features": 16, "num_tensor_features": 4, "lmax": 1, "num_layers": 2, "num_heads": 2,
             "num_rbf": 8, "radial_hidden": 16}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ethanol_checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ethanol")
    main(["fit", "--config", str(TINY), "--data.path", str(ETHANOL_NPZ), "--trainer.max_epochs", "1",
          "--trainer.default_root_dir", str(run)])
    return run / "checkpoints" / "last.ckpt"


def _assert_weights_of(potential: GeoPaTra, checkpoint: Path) -> None:
    """Every tensor of ``potential``'s state dict equals the checkpoint's, bit for bit."""
    source, _ = load_potential(checkpoint)
    for (name, a), b in zip(potential.state_dict().items(), source.state_dict().values()):
        assert torch.equal(a, b), name


def test_weights_are_copied(ethanol_checkpoint):
    fresh = GeoPaTra(**TINY_ARCH)
    load_weights_for_fine_tuning(fresh, ethanol_checkpoint, [1, 6, 8])
    _assert_weights_of(fresh, ethanol_checkpoint)


def test_wrong_architecture_elements_or_kind_are_refused(ethanol_checkpoint):
    with pytest.raises(CheckpointError, match="num_features: 16 in the checkpoint, 32 here"):
        load_weights_for_fine_tuning(GeoPaTra(**{**TINY_ARCH, "num_features": 32}), ethanol_checkpoint, [1, 6, 8])
    with pytest.raises(ElementError, match=r"atomic numbers \[7\] this checkpoint never saw"):
        load_weights_for_fine_tuning(GeoPaTra(**TINY_ARCH), ethanol_checkpoint, [1, 6, 7, 8])
    from geopatra.models.sgdml import SGDML

    with pytest.raises(CheckpointError, match="cannot be fine-tuned"):
        load_weights_for_fine_tuning(SGDML(), ethanol_checkpoint, [1, 6, 8])


def test_checkpoint_older_than_an_architecture_option_is_fine_tuned(ethanol_checkpoint, tmp_path):
    """A checkpoint written before an option existed (its record lacks ``qk_norm``) has that option's
    default, so it fine-tunes a model built with the default and is refused by one without it."""
    checkpoint = torch.load(ethanol_checkpoint, weights_only=False)
    del checkpoint["geopatra"]["init_args"]["qk_norm"]
    older = tmp_path / "older.ckpt"
    torch.save(checkpoint, older)
    fresh = GeoPaTra(**TINY_ARCH)
    load_weights_for_fine_tuning(fresh, older, [1, 6, 8])
    _assert_weights_of(fresh, ethanol_checkpoint)
    with pytest.raises(CheckpointError, match="qk_norm: False in the checkpoint, True here"):
        load_weights_for_fine_tuning(GeoPaTra(**TINY_ARCH, qk_norm=True), older, [1, 6, 8])


def test_fine_tuning_run_starts_from_the_checkpoint(ethanol_checkpoint, tmp_path):
    """A new run on other data (rMD17 ethanol, extxyz in kcal/mol) from the checkpoint: with a zero
    learning rate its weights stay the checkpoint's; the record names the new data."""
    run = tmp_path / "fine"
    main(["fit", "--config", str(TINY), "--data.path", str(ETHANOL_XYZ), "--data.energy_unit", "kcal/mol",
          "--data.n_train", "40", "--data.n_val", "8", "--data.n_test", "8", "--trainer.max_epochs", "1",
          "--model.init_args.init_from", str(ethanol_checkpoint), "--model.init_args.lr", "1e-12",
          "--model.init_args.min_lr", "0", "--trainer.default_root_dir", str(run)])
    tuned, record = load_potential(run / "checkpoints" / "last.ckpt")
    source, source_record = load_potential(ethanol_checkpoint)
    assert record.fingerprint != source_record.fingerprint
    for (name, a), b in zip(tuned.named_parameters(), source.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=0, atol=1e-6, err_msg=name)
    assert float(tuned.energy_scale) == float(source.energy_scale)  # force scale kept, shifts refitted
