"""The training recipe of ForceFieldTask: loss normalisation, learning-rate schedule, EMA warm-up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geopatra.callbacks import ExponentialMovingAverage, WarmupEMA
from geopatra.models.transformer import GeoPaTra
from geopatra.task import ForceFieldTask


def tiny_task(**kwargs) -> ForceFieldTask:
    potential = GeoPaTra(num_features=8, num_tensor_features=4, lmax=1, num_layers=1, num_heads=2, num_rbf=8)
    return ForceFieldTask(potential, **kwargs)


def test_warmup_then_cosine_to_min_lr() -> None:
    task = tiny_task(lr=1e-3, min_lr=1e-5, warmup_steps=10, scheduler="cosine")
    assert task.learning_rate(0, 0.0) == pytest.approx(1e-4)  # first warm-up step: lr / warmup_steps
    assert task.learning_rate(4, 0.0) == pytest.approx(5e-4)
    assert task.learning_rate(9, 0.0) == pytest.approx(1e-3)
    assert task.learning_rate(500, 0.5) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert task.learning_rate(900, 1.0) == pytest.approx(1e-5)
    rates = [task.learning_rate(100, p) for p in (0.1, 0.3, 0.6, 0.9)]
    assert rates == sorted(rates, reverse=True)


def test_constant_schedule_keeps_lr_after_warmup() -> None:
    task = tiny_task(lr=2e-3, warmup_steps=4, scheduler="constant")
    assert [task.learning_rate(s, 0.99) for s in (0, 3, 100)] == pytest.approx([5e-4, 2e-3, 2e-3])


def test_normalised_per_atom_loss_by_hand() -> None:
    task = tiny_task(normalize_loss=True)
    task._error_scale = 2.0
    error = torch.tensor([1.0, -3.0])
    assert float(task._loss(error)) == pytest.approx(((0.5**2) + (1.5**2)) / 2)
    task = tiny_task(normalize_loss=True, loss="huber", huber_delta=1.0)
    task._error_scale = 2.0
    assert float(task._loss(error)) == pytest.approx((0.5 * 0.5**2 + (1.5 - 0.5)) / 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scheduler": "linear"}, "scheduler"),
        ({"energy_loss": "per_frame"}, "energy_loss"),
        ({"loss": "l1"}, "loss"),
        ({"energy_error_scale": "max"}, "energy_error_scale"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"lr": 1e-4, "min_lr": 1e-3}, "min_lr"),
    ],
)
def test_invalid_recipe_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_task(**kwargs)


def test_ema_warmup_forgets_the_initial_weights() -> None:
    """Average a constant 0 into an initial 1: the weight of step 1 left after n updates."""

    def remaining(warmup: bool, n_updates: int, decay: float = 0.99) -> float:
        update, averaged = WarmupEMA(decay, warmup), torch.ones(1, dtype=torch.float64)
        for n in range(1, n_updates + 1):
            update([averaged], [torch.zeros(1, dtype=torch.float64)], torch.tensor(n))
        return float(averaged)

    assert remaining(False, 230) == pytest.approx(0.99**230)  # the plain EMA: about 10 % left
    assert remaining(True, 230) < 0.01
    expected = math.prod(min(0.99, (1 + n) / (10 + n)) for n in range(1, 231))
    assert remaining(True, 230) == pytest.approx(expected, rel=1e-6)
    capped = math.prod(min(0.5, (1 + n) / (10 + n)) for n in range(1, 13))  # the warm-up passes 0.5 at n = 9
    assert remaining(True, 12, decay=0.5) == pytest.approx(capped, rel=1e-12)
    flags = torch.tensor([True, False])
    WarmupEMA(0.9, True)([flags], [torch.tensor([False, True])], torch.tensor(3))
    assert flags.tolist() == [False, True]  # bool buffers (seen elements) take the model's value
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(decay=1.0)


def test_ema_through_averaged_model_matches_the_update_by_hand() -> None:
    """As the callback uses it (AveragedModel, buffers included): float32 parameters and the float64
    energy shift follow the warm-up EMA computed tensor by tensor; the bool mask follows the model."""
    from torch.optim.swa_utils import AveragedModel

    torch.manual_seed(0)
    model = GeoPaTra(num_features=8, num_tensor_features=4, lmax=1, num_layers=1, num_heads=2, num_rbf=4)
    averaged = AveragedModel(model, multi_avg_fn=WarmupEMA(0.9, True), use_buffers=True)
    tensors = lambda module: {**dict(module.named_parameters()), **dict(module.named_buffers())}  # noqa: E731
    expected: dict[str, torch.Tensor] = {}
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.energy_shift.add_(torch.randn_like(model.energy_shift))
            model.seen_elements[step] = ~model.seen_elements[step]
        averaged.update_parameters(model)
        decay = min(0.9, (1 + step) / (10 + step))  # the first update (step 0) copies
        for name, current in tensors(model).items():
            if step == 0 or not current.is_floating_point():
                expected[name] = current.detach().double().clone()
            else:
                expected[name] = decay * expected[name] + (1 - decay) * current.detach().double()
    got = tensors(averaged.module)
    assert set(got) == set(expected)
    for name, value in got.items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(got["seen_elements"], model.seen_elements)


def test_loss_scales_by_hand() -> None:
    class Train:  # what the task reads of a training set: energies [n_frames], forces, atoms
        E = np.array([1.0, 3.0, 5.0, 7.0])  # kcal/mol; std sqrt(5)
        F = np.full((4, 2, 3), 2.0)  # kcal/mol/Å; RMS 2
        z = np.array([1, 8])

    assert tiny_task(normalize_loss=False)._loss_scales(Train) == (1.0, 1.0)
    assert tiny_task(energy_error_scale="force_rms")._loss_scales(Train) == pytest.approx((2.0, 2.0))
    per_atom = tiny_task(energy_error_scale="energy_std", energy_loss="per_atom")._loss_scales(Train)
    assert per_atom == pytest.approx((2.0, np.sqrt(5.0) / 2))
    total = tiny_task(energy_error_scale="energy_std", energy_loss="total")._loss_scales(Train)
    assert total == pytest.approx((2.0, np.sqrt(5.0)))

    class Other:  # a second molecule: 4 atoms, forces RMS 4, per-atom energies 25.25 .. 26.75 (mean 26)
        E = np.array([101.0, 103.0, 105.0, 107.0])
        F = np.full((4, 4, 3), 4.0)
        z = np.array([1, 1, 6, 8])

    both = tiny_task(energy_error_scale="energy_std", energy_loss="per_atom")._loss_scales([Train, Other])
    per_atom_energies = np.concatenate([Train.E / 2 - 2.0, Other.E / 4 - 26.0])  # each about its own mean
    rms = np.sqrt((4 * 2 * 3 * 2.0**2 + 4 * 4 * 3 * 4.0**2) / (4 * 2 * 3 + 4 * 4 * 3))
    assert both == pytest.approx((rms, np.std(per_atom_energies)))


def test_random_state_round_trip_and_legacy_checkpoints() -> None:
    """RandomState restores the torch, numpy and Python generators from its own checkpoint entry, and
    from the run record of checkpoints written before it existed (``geopatra.rng``)."""
    import random

    from geopatra.callbacks import RandomState
    from geopatra.checkpoint import CHECKPOINT_KEY

    def draw() -> tuple:
        return float(torch.rand(1)), float(np.random.rand()), random.random()

    callback = RandomState()
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    saved = callback.state_dict()
    expected = draw()
    assert draw() != expected  # the generators moved on
    callback.load_state_dict(saved)
    assert draw() == expected
    callback.on_load_checkpoint(None, None, {CHECKPOINT_KEY: {"rng": saved}})  # legacy place
    assert draw() == expected
    callback.on_load_checkpoint(None, None, {CHECKPOINT_KEY: {"rng": saved}, "callbacks": {callback.state_key: {}}})
    assert draw() != expected  # its own entry wins: the legacy one is not read
