"""GeoPaTra's recipe fragments: ``geopatra fit`` overrides of ``configs/geopatra.yaml`` that the accuracy race
ships per (data, M) and the overfit probe combines into variants. Each is a list of CLI arguments."""

from __future__ import annotations

import json

from experiments import layout

P = layout.POTENTIAL_ARG
#: a radial basis fitted to ethanol (its pairs reach 4.4 Å) at the peptide's resolution, ~0.43 Å per function
ETHANOL_BASIS = [P + "num_rbf", "14", P + "rbf_max", "6.0"]
#: wider tensors and more frames per step, where the model underfits at the budget
WIDE = [P + "num_tensor_features", "32", "--data.batch_size", "8"]
#: MACE's learning rate (not the config's 3e-3)
MACE_LR = ["--model.init_args.lr", "1.0e-2"]
#: queries and keys layer-normalised per head: keeps attention logits bounded at MACE's learning rate
QK_NORM = [P + "qk_norm", "true"]
#: the large step: MACE's learning rate, stable with the query/key layer norms
LARGE_STEP = [*MACE_LR, *QK_NORM]
#: features and pair harmonics to degree 3 (not 2)
LMAX3 = [P + "lmax", "3"]
#: the config's callbacks with a slower weight average (EMA decay 0.999, not 0.99: over ~1,000 steps, not ~100)
EMA_SLOW = ["--trainer.callbacks", json.dumps([
    {"class_path": "geopatra.callbacks.ExponentialMovingAverage", "init_args": {"decay": 0.999, "warmup": True}},
    {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
     "init_args": {"monitor": "val/force_mae_kcal_mol_A", "mode": "min", "patience": 50}}])]
#: training energies and forces from one torch.compile'd graph (geopatra/models/compiled_forces.py)
COMPILED = ["--model.init_args.compile", "true"]
#: attention weights times a cosine envelope to 5 Å on all pairs (dense: no neighbour lists); on ethanol
#: (pairs to 4.4 Å) a locality prior that cuts no pair
ENVELOPE_5A = [P + "cutoff", "5.0", P + "sparse_cutoff", "false"]


def gradient_clip(norm: float) -> list[str]:
    """The gradient's norm clipped at ``norm`` (the config: 10)."""
    return ["--trainer.gradient_clip_val", str(norm)]


#: the gradient's norm clipped at 1 (the config: 10)
TIGHT_CLIP = gradient_clip(1.0)


def huber_loss(delta: float) -> list[str]:
    """The Huber loss, quadratic below ``delta`` (a fraction of the training force RMS), linear above."""
    return ["--model.init_args.loss", "huber", "--model.init_args.huber_delta", str(delta)]


#: round 20's fit on ethanol at M = 50: the Huber force loss (δ 0.01) with the gradient's norm clipped at 1
ROBUST_FIT = [*huber_loss(0.01), *TIGHT_CLIP]


def energy_weight(weight: float) -> list[str]:
    """The energy term of the loss weighted by ``weight`` (the config: 1, forces 100)."""
    return ["--model.init_args.energy_weight", str(weight)]
