"""Shared fixtures: data paths, seeding, a small thread count so tests behave on 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

DATA = Path(__file__).parent / "data"

# CI has 2 cores to itself; on a shared machine set GEOPATRA_TEST_THREADS=1 (oversubscribed torch
# threads wait on each other and slow small models down by orders of magnitude).
torch.set_num_threads(int(os.environ.get("GEOPATRA_TEST_THREADS", "2")))


@pytest.fixture
def torch_threads():
    """``torch_threads(n)`` sets torch's intra-op thread count for one test; restored afterwards."""
    previous = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a whole module: e3nn graphs are many small ops, and on a shared 2-core
    machine two OpenMP threads wait on each other (measured: a GeoPaTra training step 0.1 s with 1
    thread, 12 s with 2). Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def data_dir() -> Path:
    return DATA


ROOT = Path(__file__).parents[1]
TINY_CONFIGS = {
    "geopatra": ROOT / "tests/configs/geopatra_tiny.yaml",
    "sgdml": ROOT / "tests/configs/sgdml_tiny.yaml",
}


@pytest.fixture(scope="session")
def bundled_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Both model kinds trained by `geopatra fit` on the bundled 42-atom dataset (small settings):
    {kind: path to last.ckpt}. Trained once per test session."""
    from geopatra.cli import main

    paths = {}
    # enough GeoPaTra training that its forces are not ~0 (its readout starts at zero) and that its
    # surface holds a 100 K NVE run together: with 64 frames the run collapsed (two atoms 0.5 Å apart)
    # or not depending on the torch thread count; 128 frames x 8 epochs is stable from 6 to 12 epochs
    sizes = {"geopatra": ("128", "8"), "sgdml": ("16", "1")}
    for kind, config in TINY_CONFIGS.items():
        run = tmp_path_factory.mktemp(f"bundled_{kind}")
        n_train, epochs = sizes[kind]
        main([
            "fit", "--config", str(config), "--data.path", "bundled", "--data.n_train", n_train,
            "--data.n_val", "8", "--data.n_test", "8", "--trainer.max_epochs", epochs,
            "--trainer.default_root_dir", str(run),
        ])
        paths[kind] = run / "checkpoints" / "last.ckpt"
    return paths


@pytest.fixture
def broken_torch_compile(monkeypatch) -> None:
    """``torch.compile`` returns functions that fail as a missing C++ compiler would (a TorchDynamoException
    saying "no C++ compiler"), to test the eager fallbacks."""

    def broken_compiler(function, **kwargs):
        def run(*args):
            raise torch._dynamo.exc.TorchDynamoException("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compiler)
