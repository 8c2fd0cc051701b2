"""GeoPaTra.attention_weights: the weights the forward pass uses, as [layers, heads, N, N] per molecule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3
from test_transformer import SMALL  # one definition of the small test architecture

from geopatra.models.transformer import GeoPaTra
from geopatra.models.transformer.attention import GeometricAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ethanol(request) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(request.path.parent / "data" / "md17_ethanol_2000.npz")
    return torch.tensor(data["R"][0], dtype=torch.float64), torch.tensor(data["z"], dtype=torch.long)


def model(**overrides) -> GeoPaTra:
    return GeoPaTra(**{**SMALL, **overrides}, dtype="float64").eval()


@pytest.mark.parametrize("cutoff", [None, 2.0])
def test_shape_rows_and_diagonal(cutoff, ethanol) -> None:
    pos, z = ethanol
    weights = model(cutoff=cutoff).attention_weights(pos, z)
    n = len(z)
    assert weights.shape == (SMALL["num_layers"], SMALL["num_heads"], n, n)
    assert not weights.requires_grad
    assert torch.all(weights >= 0)
    assert torch.all(torch.diagonal(weights, dim1=-2, dim2=-1) == 0)
    rows = weights.sum(-1)
    has_sender = (torch.cdist(pos, pos) < (cutoff or np.inf)).sum(-1) > 1  # itself counts once
    torch.testing.assert_close(rows[..., has_sender], torch.ones_like(rows[..., has_sender]))
    if cutoff is not None:
        far = torch.cdist(pos, pos) >= cutoff
        assert far.any() and torch.all(weights[..., far] == 0)


def test_sparse_and_dense_cutoff_layouts_agree(ethanol) -> None:
    pos, z = ethanol
    sparse = model(cutoff=2.0)
    dense = model(cutoff=2.0, sparse_cutoff=False)
    dense.load_state_dict(sparse.state_dict())
    torch.testing.assert_close(sparse.attention_weights(pos, z), dense.attention_weights(pos, z))


def test_invariant_under_rotation_and_translation_equivariant_under_permutation(ethanol) -> None:
    pos, z = ethanol
    net = model()
    weights = net.attention_weights(pos, z)
    rotation = o3.rand_matrix(dtype=torch.float64) * -1.0  # with a reflection
    moved = pos @ rotation.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(net.attention_weights(moved, z), weights)
    perm = torch.randperm(len(z))
    permuted = net.attention_weights(pos[perm], z[perm])
    torch.testing.assert_close(permuted, weights[:, :, perm][:, :, :, perm])


@pytest.mark.parametrize("cutoff", [None, 2.0])
def test_equal_to_the_weights_of_the_forward_pass(cutoff, ethanol, monkeypatch) -> None:
    """Record alpha inside the normal forward (one chunk per layer) and compare."""
    pos, z = ethanol
    net = model(cutoff=cutoff, pair_chunk_size=None)
    seen: list[torch.Tensor] = []
    original = GeometricAttention._weights

    def recording(self, *args):
        alpha, radial = original(self, *args)
        seen.append(alpha.detach().clone())
        return alpha, radial

    expected = net.attention_weights(pos, z)
    monkeypatch.setattr(GeometricAttention, "_weights", recording)
    batch = torch.zeros(len(z), dtype=torch.long)
    with torch.no_grad():
        net(pos, z, batch, 1)
    assert len(seen) == SMALL["num_layers"]
    for layer, alpha in enumerate(seen):
        if cutoff is None:  # dense [1, N, N, H]
            recorded = alpha[0].permute(2, 0, 1)
        else:  # neighbour lists [N, 1, K, H] -> dense
            geometry = net.pair_geometry(pos, batch, 1)
            recorded = torch.zeros_like(expected[layer])
            rows = torch.arange(len(z)).unsqueeze(1).expand_as(geometry.neighbors)
            valid = geometry.mask[:, 0]
            recorded[:, rows[valid], geometry.neighbors[valid]] = alpha[:, 0][valid].T
        torch.testing.assert_close(recorded, expected[layer])
