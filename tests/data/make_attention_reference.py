"""Writes attention_reference.pt: GeoPaTra models with random weights, and their float64 energies,
forces and parameter gradients, for tests/test_transformer.py's check that later code computes the
same model. Run with the geopatra to take as the reference on PYTHONPATH (provenance: README.md)."""

import sys

import numpy as np
import torch

from geopatra.models.forces import energy_and_forces
from geopatra.models.transformer import GeoPaTra

VARIANTS = {
    "global": {"pair_chunk_size": 40},  # chunks of receivers, recomputed in backward
    "cutoff": {"cutoff": 2.0, "radial_rank": 2, "value_projection": True},  # neighbour lists
}
BASE = {"num_features": 8, "num_tensor_features": 4, "lmax": 3, "num_layers": 2, "num_heads": 2, "num_rbf": 8,
        "rbf_max": 6.0, "radial_hidden": 8, "radial_basis": "bessel", "node_invariants": True,
        "equivariant_norm": True, "layer_readouts": True, "dtype": "float64"}

data = np.load("tests/data/md17_ethanol_2000.npz")
pos = torch.tensor(data["R"][[0, 500, 1000]].reshape(-1, 3), dtype=torch.float64)
z = torch.tensor(np.tile(data["z"], 3), dtype=torch.long)
batch = torch.arange(3).repeat_interleave(len(data["z"]))
print("reference code:", sys.modules["geopatra"].__file__)
out = {"base": BASE, "pos": pos, "z": z, "batch": batch, "variants": {}}
for name, options in VARIANTS.items():
    torch.manual_seed(0)
    model = GeoPaTra(**BASE, **options)
    with torch.no_grad():
        for p in model.parameters():  # away from the initial zeros (layer readouts) and symmetric values
            p.add_(0.05 * torch.randn_like(p))
    energy, forces = energy_and_forces(model, pos, z, batch, 3, training=True)
    (energy.sum() + forces.square().sum()).backward()
    out["variants"][name] = {
        "options": options,
        "state_dict": model.state_dict(),
        "energy": energy.detach(),
        "forces": forces.detach(),
        "grads": {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
    }
torch.save(out, sys.argv[1] if len(sys.argv) > 1 else "tests/data/attention_reference.pt")
