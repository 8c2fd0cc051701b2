"""GeoPaTra: symmetry, batching, forces, long range, statistics, checkpoints, a training smoke test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.io import read
from e3nn import o3
from potential_contract import PotentialContract, batch_of, rel_err

from geopatra.data.dataset import MolecularDataset
from geopatra.errors import ElementError
from geopatra.models.forces import energy_and_forces
from geopatra.models.transformer import GeoPaTra
from geopatra.models.transformer.density import AtomicDensity
from geopatra.models.transformer.radial import BesselRBF
from geopatra.models.transformer.readout import fit_element_shifts

SMALL = {
    "num_features": 16,
    "num_tensor_features": 8,
    "lmax": 2,
    "num_layers": 2,
    "num_heads": 2,
    "num_rbf": 16,
    "radial_hidden": 16,
}
TOL = {"float64": 1e-10, "float32": 1e-4}
TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}


def small_model(dtype: str = "float64", **overrides) -> GeoPaTra:
    model = GeoPaTra(**{**SMALL, **overrides}, dtype=dtype)
    _randomise_outputs(model)
    return model.eval()


def _randomise_outputs(model: GeoPaTra) -> None:
    """Stand in for a trained model: the readouts' last layers start at zero (energy = shifts), so
    give them non-trivial weights, and a non-unit scale (default inits of e3nn linears are fine)."""
    with torch.no_grad():
        torch.nn.init.normal_(model.readout.net[-1].weight, std=0.5)
        for linear in model.layer_readouts:
            torch.nn.init.normal_(linear.weight, std=0.5)
        if model.density is not None:
            torch.nn.init.normal_(model.density.linear.weight)
        model.energy_scale.fill_(3.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Each model option alone and all together: every one must keep the model's contract.
VARIANTS = {
    "default": {},
    "radial_rank": {"radial_rank": 3},
    "value_projection": {"value_projection": True},
    "channel_filter": {"logit_filter": "channel"},
    "softmax_sink": {"attention_normalization": "softmax_sink"},
    "silu": {"attention_normalization": "silu"},
    "qk_norm": {"qk_norm": True},
    "node_invariants": {"node_invariants": True},
    "equivariant_norm": {"equivariant_norm": True},
    "bessel": {"radial_basis": "bessel"},
    "node_product": {"node_product": 4},
    "layer_readouts": {"layer_readouts": True},
    "density_embedding": {"density_embedding": True},
    "lmax3": {"lmax": 3},  # features and pair harmonics to degree 3 (the race's ethanol recipe at M = 50)
    "all": {"radial_rank": 2, "value_projection": True, "logit_filter": "channel",
            "attention_normalization": "softmax_sink", "qk_norm": True, "node_invariants": True,
            "equivariant_norm": True, "node_product": 4, "layer_readouts": True, "density_embedding": True},
}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def variant(request) -> dict:
    return VARIANTS[request.param]


@pytest.fixture(scope="module")
def ethanol(request) -> dict[str, np.ndarray]:
    data = np.load(request.path.parent / "data" / "md17_ethanol_2000.npz")
    return {key: data[key] for key in ("R", "z", "E", "F")}


@pytest.fixture(scope="module")
def peptide(request):
    return read(request.path.parent / "data" / "md22_Ac-Ala3-NHMe_5frames.xyz", index=0)


class TestGeoPaTraContract(PotentialContract):
    """O(3) with reflections, translation, permutation, batch = single, no cross-frame gradient,
    finite differences and state-dict round trip, for each model option."""

    @pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
    def potential(self, request) -> GeoPaTra:
        return small_model(**VARIANTS[request.param])

    @pytest.fixture
    def fresh_potential(self, potential) -> GeoPaTra:
        return GeoPaTra(**potential.init_args)

    @pytest.fixture
    def structures(self, ethanol, peptide) -> list:
        return [(peptide.positions, peptide.numbers), (ethanol["R"][3], ethanol["z"]), (ethanol["R"][5], ethanol["z"])]


def test_o3_and_translation_symmetry_in_float32(variant, ethanol, peptide) -> None:
    model = small_model("float32", **variant)
    assert next(model.parameters()).dtype == torch.float32
    structures = [(ethanol["R"][0], ethanol["z"]), (peptide.positions, peptide.numbers)]
    pos, z, batch, n = batch_of(structures)
    energy, forces = energy_and_forces(model, pos.float(), z, batch, n)
    for sign in (1.0, -1.0):  # -1: includes a reflection
        rot = o3.rand_matrix(dtype=torch.float64) * sign
        shift = torch.randn(3, dtype=torch.float64) * 5.0
        energy2, forces2 = energy_and_forces(model, (pos @ rot.T + shift).float(), z, batch, n)
        assert rel_err(energy2.double(), energy.double()) <= TOL["float32"]
        assert rel_err(forces2.double(), forces.double() @ rot.T) <= TOL["float32"]
    assert torch.get_default_dtype() == torch.float32


def test_per_atom_energies_sum_to_the_energy(variant, ethanol, peptide) -> None:
    model = small_model(**variant)
    structures = [(ethanol["R"][0], ethanol["z"]), (peptide.positions, peptide.numbers)]
    energy, _ = energy_and_forces(model, *batch_of(structures))
    atom_energy = model.per_atom_energy(*batch_of(structures))
    sums = torch.stack([chunk.sum() for chunk in torch.split(atom_energy, [len(z) for _, z in structures])])
    assert rel_err(sums, energy) <= 1e-12


def test_zero_distance_pairs_and_padding_are_finite(variant, ethanol) -> None:
    model = small_model(**variant)
    model.train()
    duplicated = ethanol["R"][0].copy()
    duplicated[1] = duplicated[0]  # two atoms at the same position
    structures = [(duplicated, ethanol["z"]), (np.zeros((1, 3)), np.array([8])), (ethanol["R"][2], ethanol["z"])]
    energy, forces = energy_and_forces(model, *batch_of(structures), training=True)
    assert torch.isfinite(energy).all() and torch.isfinite(forces).all()
    (energy.sum() + forces.square().sum()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def _chain(n_atoms: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """A hand-built polyyne-like carbon chain with alternating 1.21 / 1.38 Å bonds and a slight zigzag."""
    x = np.cumsum([0.0] + [1.21 if i % 2 == 0 else 1.38 for i in range(n_atoms - 1)])
    pos = np.stack([x, 0.05 * (np.arange(n_atoms) % 2), np.zeros(n_atoms)], axis=1)
    return pos, np.full(n_atoms, 6)


@pytest.mark.parametrize("cutoff, sparse", [(None, True), (5.0, True), (5.0, False)])
def test_far_atom_couples_only_without_cutoff(variant, cutoff, sparse) -> None:
    pos_np, z_np = _chain()
    # an atom's energy reaches 3 x 5 Å (the density embedding and 2 layers), a force twice that
    assert pos_np[-1, 0] - pos_np[0, 0] > 30.0
    model = small_model(**variant, cutoff=cutoff, sparse_cutoff=sparse)
    pos, z, batch, n = batch_of([(pos_np, z_np)])
    pos.requires_grad_(True)
    (grad,) = torch.autograd.grad(model(pos, z, batch, n).sum(), pos, create_graph=True)
    force_last = -grad[-1]
    coupling = torch.stack([torch.autograd.grad(f, pos, retain_graph=True)[0][0] for f in force_last])
    if cutoff is None:
        assert coupling.abs().max() > 1e-8  # dF_last / dR_first != 0: the far end is felt
    else:
        assert torch.all(coupling == 0)  # beyond the reach of a local model: exactly zero
    # and directly: moving the first atom changes (or not) the force on the last atom
    moved = pos.detach().clone()
    moved[0, 1] += 0.3
    _, f_ref = energy_and_forces(model, pos.detach(), z, batch, n)
    _, f_moved = energy_and_forces(model, moved, z, batch, n)
    if cutoff is None:
        assert (f_moved[-1] - f_ref[-1]).abs().max() > 1e-8
    else:
        assert torch.equal(f_moved[-1], f_ref[-1])


@pytest.mark.parametrize("cutoff", [None, 4.0])
def test_chunked_pairs_match_unchunked(variant, cutoff, ethanol, peptide) -> None:
    whole = small_model(**variant, pair_chunk_size=None, cutoff=cutoff)
    chunked = small_model(**variant, pair_chunk_size=50, cutoff=cutoff)  # many chunks, recomputed in backward
    chunked.load_state_dict(whole.state_dict())
    whole.train(), chunked.train()
    args = batch_of([(ethanol["R"][0], ethanol["z"]), (peptide.positions, peptide.numbers)])
    results = []
    for model in (whole, chunked):
        energy, forces = energy_and_forces(model, *args, training=True)
        (energy.sum() + forces.square().sum()).backward()
        results.append((energy, forces, [p.grad.clone() for p in model.parameters()]))
    (e1, f1, g1), (e2, f2, g2) = results
    assert rel_err(e2, e1) <= 1e-10 and rel_err(f2, f1) <= 1e-10
    for a, b in zip(g1, g2):
        assert rel_err(b, a) <= 1e-9


def test_neighbor_lists_match_masked_dense_pairs(ethanol, peptide) -> None:
    sparse = small_model(cutoff=4.0)
    dense = small_model(cutoff=4.0, sparse_cutoff=False)
    dense.load_state_dict(sparse.state_dict())
    args = batch_of([(ethanol["R"][0], ethanol["z"]), (peptide.positions, peptide.numbers)])
    geometry = sparse.pair_geometry(args[0], args[2], args[3])
    assert geometry.neighbors is not None and geometry.neighbors.shape[1] < len(peptide)  # really sparse
    e_sparse, f_sparse = energy_and_forces(sparse, *args)
    e_dense, f_dense = energy_and_forces(dense, *args)
    assert rel_err(e_sparse, e_dense) <= 1e-10 and rel_err(f_sparse, f_dense) <= 1e-10


@pytest.mark.parametrize("variant", ["global", "cutoff"])
def test_same_model_as_the_reference_code(variant) -> None:
    """Energies, forces and parameter gradients equal those of the reference code's (geopatra before the
    attention was restructured for speed; tests/data/README.md) with the same weights, in float64."""
    from pathlib import Path

    reference = torch.load(Path(__file__).parent / "data" / "attention_reference.pt", weights_only=True)
    case = reference["variants"][variant]
    model = GeoPaTra(**reference["base"], **case["options"])
    model.load_state_dict(case["state_dict"])
    energy, forces = energy_and_forces(model, reference["pos"], reference["z"], reference["batch"], 3, training=True)
    (energy.sum() + forces.square().sum()).backward()
    assert rel_err(energy.detach(), case["energy"]) <= 1e-12
    assert rel_err(forces.detach(), case["forces"]) <= 1e-12
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == case["grads"].keys()
    for name, grad in grads.items():
        assert rel_err(grad, case["grads"][name]) <= 1e-10, name


def test_path_by_path_output_map_equals_e3nn_linear() -> None:
    """GeometricAttention applies ``linear_out`` path by path; it must equal e3nn's map of the concatenation."""
    torch.manual_seed(0)
    attention = small_model(lmax=3, num_tensor_features=4).attention[0]
    pieces = [torch.randn(5, 2, mul, ir.dim, dtype=torch.float64) for mul, ir in attention.irreps_msg]
    expected = attention.linear_out(torch.cat([p.flatten(-2) for p in pieces], dim=-1))
    torch.testing.assert_close(attention._linear_out(pieces), expected, rtol=1e-12, atol=1e-12)


def _synthetic(z: list[int], shifts: dict[int, float], n_frames: int, rng) -> MolecularDataset:
    energy = sum(shifts[e] for e in z) + np.zeros(n_frames)
    return MolecularDataset(
        R=rng.normal(size=(n_frames, len(z), 3)) * 2.0,
        z=np.array(z),
        E=energy,
        F=rng.normal(size=(n_frames, len(z), 3)) * 7.0,
    )


def test_fit_to_data_recovers_element_shifts_and_force_scale() -> None:
    rng = np.random.default_rng(1)
    shifts = {1: -313.5, 6: -23_750.2, 7: -34_260.0, 8: -47_180.7}
    molecules = [[8, 1, 1], [6, 1, 1, 1, 1], [7, 1, 1, 1], [6, 8, 8], [6, 6, 8, 1, 1, 1, 1, 1, 1], [7, 7]]
    datasets = [_synthetic(m, shifts, 4, rng) for m in molecules]
    model = small_model()
    model.fit_to_data(datasets)
    for element, value in shifts.items():
        assert abs(float(model.energy_shift[element]) - value) <= 1e-6 * abs(value)
    assert float(model.energy_shift[9]) == 0.0
    all_forces = np.concatenate([d.F.reshape(-1) for d in datasets])
    assert float(model.energy_scale) == pytest.approx(np.sqrt(np.mean(all_forces**2)), rel=1e-12)
    model.check_atoms(torch.tensor([6, 7, 8, 1]))
    with pytest.raises(ElementError, match="16"):
        model.check_atoms(torch.tensor([6, 16]))


def test_single_molecule_shift_reproduces_mean_energy(ethanol) -> None:
    data = MolecularDataset(R=ethanol["R"][:50], z=ethanol["z"], E=ethanol["E"][:50, 0], F=ethanol["F"][:50])
    shift = fit_element_shifts([data.z], [data.E], 118)
    assert shift[data.z].sum() == pytest.approx(data.E.mean(), rel=1e-12)


def test_check_atoms_before_fit_and_out_of_range() -> None:
    model = small_model(max_z=20)
    model.check_atoms(np.array([1, 6, 20]))  # before fitting every element is accepted
    with pytest.raises(ElementError):
        model.check_atoms(np.array([1, 21]))
    with pytest.raises(ElementError):
        model.check_atoms(np.array([0, 1]))


def test_state_dict_carries_the_fitted_statistics(ethanol) -> None:
    """Beyond the contract's round trip: the buffers set by fit_to_data travel with the weights."""
    model = small_model()
    train = MolecularDataset(R=ethanol["R"][:30], z=ethanol["z"], E=ethanol["E"][:30, 0], F=ethanol["F"][:30])
    model.fit_to_data(train)
    fresh = small_model()
    assert not torch.equal(fresh.energy_shift, model.energy_shift)
    fresh.load_state_dict(model.state_dict())
    for name in ("energy_shift", "energy_scale", "seen_elements"):
        assert torch.equal(getattr(fresh, name), getattr(model, name)), name
    with pytest.raises(ElementError):
        fresh.check_atoms([6, 7])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="dtype"):
        GeoPaTra(**SMALL, dtype="float16")
    with pytest.raises(ValueError, match="num_heads"):
        GeoPaTra(**{**SMALL, "num_heads": 3})
    with pytest.raises(ValueError, match="cutoff"):
        GeoPaTra(**SMALL, cutoff=0.0)
    with pytest.raises(ValueError, match="radial_rank"):
        GeoPaTra(**SMALL, radial_rank=0)
    with pytest.raises(ValueError, match="logit_filter"):
        GeoPaTra(**SMALL, logit_filter="pair")
    with pytest.raises(ValueError, match="normalization"):
        GeoPaTra(**SMALL, attention_normalization="sparsemax")
    with pytest.raises(ValueError, match="qk_norm needs >= 2 scalar channels per head"):
        GeoPaTra(**{**SMALL, "num_features": 2}, qk_norm=True)
    with pytest.raises(ValueError, match="radial_basis"):
        GeoPaTra(**SMALL, radial_basis="chebyshev")
    with pytest.raises(ValueError, match="dropout"):
        GeoPaTra(**SMALL, attention_dropout=1.0)
    with pytest.raises(ValueError, match="drop_path"):
        GeoPaTra(**SMALL, drop_path=-0.1)
    with pytest.raises(ValueError, match="one block per degree"):
        AtomicDensity(o3.Irreps("8x0e+4x1e"), num_rbf=8, radial_hidden=8, max_z=10)


DROPOUT = {"attention_dropout": 0.3, "drop_path": 0.3}


def test_dropout_acts_in_training_only(ethanol, peptide) -> None:
    """Attention dropout and drop path leave evaluation as it is; in training they change the energy,
    reproducibly under one seed."""
    plain = small_model()
    dropped = small_model(**DROPOUT)
    dropped.load_state_dict(plain.state_dict())
    args = batch_of([(ethanol["R"][0], ethanol["z"]), (peptide.positions, peptide.numbers)])
    assert rel_err(dropped(*args), plain(*args)) <= 1e-12
    dropped.train()
    energies = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        energies.append(dropped(*args).detach())
    assert rel_err(energies[1], energies[0]) <= 1e-12
    assert rel_err(energies[2], energies[0]) > 1e-3
    assert rel_err(energies[0], plain(*args)) > 1e-3


def test_training_forces_are_the_gradient_of_the_dropped_energy(ethanol) -> None:
    """In training, with receivers in chunks recomputed in backward, the forces are -dE/dR of the very
    energy the dropout masks of that forward give (central differences under the same seed), and the
    energy is invariant under a rotation with reflection of the molecule."""
    model = small_model(**DROPOUT, pair_chunk_size=20).train()
    pos, z, batch, n = batch_of([(ethanol["R"][0], ethanol["z"])])

    def energy(positions: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(7)
        return model(positions, z, batch, n)

    torch.manual_seed(7)
    _, forces = energy_and_forces(model, pos, z, batch, n, training=True)
    h = 1e-5  # Å
    for atom, axis in [(0, 0), (3, 1), (8, 2)]:
        plus, minus = pos.clone(), pos.clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        difference = -(energy(plus) - energy(minus)).item() / (2 * h)
        assert abs(forces[atom, axis].item() - difference) <= 1e-5 * max(1.0, forces.abs().max().item())
    rotation = -o3.rand_matrix(dtype=torch.float64)  # det -1: a reflection
    assert rel_err(energy(pos @ rotation.T), energy(pos)) <= 1e-10


def test_sink_lets_every_attention_weight_vanish(ethanol) -> None:
    model = small_model(attention_normalization="softmax_sink")
    pos, z = torch.tensor(ethanol["R"][0]), torch.tensor(ethanol["z"], dtype=torch.long)
    rows = model.attention_weights(pos, z).sum(dim=-1)  # [layers, heads, N]
    assert torch.all(rows > 0.01) and torch.all(rows < 1.0)  # the null key takes a share
    with torch.no_grad():
        for attention in model.attention:
            attention.sink_logit.fill_(80.0)
    assert model.attention_weights(pos, z).abs().max() < 1e-20


@pytest.mark.parametrize("qk_norm", [False, True])
def test_qk_norm_keeps_attention_when_the_projections_grow(ethanol, qk_norm: bool) -> None:
    """Query and key projections 30 times larger (the logit growth of a diverging run) sharpen every
    softmax to nearly one sender without qk_norm; with it the weights stay those of the unscaled model
    (up to the layer norms' epsilon)."""
    model = small_model(qk_norm=qk_norm)
    pos, z = torch.tensor(ethanol["R"][0]), torch.tensor(ethanol["z"], dtype=torch.long)
    before = model.attention_weights(pos, z)
    with torch.no_grad():
        for attention in model.attention:
            for linear in (attention.query, attention.key):
                linear.weight.mul_(30.0)
                linear.bias.mul_(30.0)
    change = (model.attention_weights(pos, z) - before).abs().max()
    if qk_norm:
        assert change < 1e-3
    else:
        assert change > 0.3


def test_density_embedding_starts_at_zero_and_learns(ethanol) -> None:
    """The density embedding leaves the initial energy unchanged, its output map receives gradient,
    and once that map is non-zero so do its radial network and element vectors."""
    pos, z, batch, n = batch_of([(ethanol["R"][0], ethanol["z"]), (ethanol["R"][1], ethanol["z"])])
    model = GeoPaTra(**SMALL, dtype="float64", density_embedding=True)  # as built: the density map at zero
    with torch.no_grad():
        torch.nn.init.normal_(model.readout.net[-1].weight, std=0.5)
    density = model.density
    energy = model(pos, z, batch, n)
    model.density = None
    torch.testing.assert_close(energy, model(pos, z, batch, n), rtol=0, atol=0)
    model.density = density
    energy.sum().backward()
    assert density.linear.weight.grad.abs().max() > 0
    with torch.no_grad():
        torch.nn.init.normal_(density.linear.weight)
    model.zero_grad()
    model(pos, z, batch, n).sum().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in density.radial.parameters())
    assert density.species.weight.grad[z.unique()].abs().amax(dim=1).min() > 0  # every element's vector


def test_layer_readouts_start_at_zero_and_learn(ethanol) -> None:
    """The early readouts leave the initial energy unchanged, and receive gradient."""
    pos, z, batch, n = batch_of([(ethanol["R"][0], ethanol["z"]), (ethanol["R"][1], ethanol["z"])])
    energies = []
    for layer_readouts in (False, True):
        torch.manual_seed(0)
        model = GeoPaTra(**SMALL, dtype="float64", layer_readouts=layer_readouts)
        with torch.no_grad():
            torch.manual_seed(1)
            torch.nn.init.normal_(model.readout.net[-1].weight, std=0.5)
        energies.append(model(pos, z, batch, n))
    assert len(model.layer_readouts) == SMALL["num_layers"] - 1
    torch.testing.assert_close(energies[1], energies[0], rtol=0, atol=0)
    energies[1].sum().backward()
    assert all(linear.weight.grad.abs().max() > 0 for linear in model.layer_readouts)


def test_validation_diagnostics_count_effective_senders(ethanol) -> None:
    model = small_model()
    pos, z, batch, _ = batch_of([(ethanol["R"][0], ethanol["z"]), (ethanol["R"][1], ethanol["z"])])
    senders = model.validation_diagnostics(pos, z, batch)
    assert len(senders) == 2 * 2  # layers x heads
    assert all(1.0 <= value <= len(ethanol["z"]) - 1 + 1e-9 for value in senders.values())
    with torch.no_grad():  # a head that attends uniformly has exp(entropy) = N - 1 senders
        attention = model.attention[0]
        attention.query.weight.zero_(), attention.query.bias.zero_(), attention.decay_raw.fill_(-50.0)
        for layer in attention.radial.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_(), layer.bias.zero_()
    uniform = model.validation_diagnostics(pos, z, batch)
    assert uniform["attn_senders_l0_h0"] == pytest.approx(len(ethanol["z"]) - 1, rel=1e-9)


def test_training_reduces_energy_and_force_loss(ethanol) -> None:
    n = 20
    train = MolecularDataset(R=ethanol["R"][:n], z=ethanol["z"], E=ethanol["E"][:n, 0], F=ethanol["F"][:n])
    model = GeoPaTra(**{**SMALL, "num_rbf": 32}, dtype="float32")
    model.fit_to_data(train)
    model.train()
    pos, z, batch, num = batch_of([(r, train.z) for r in train.R], dtype=torch.float32)
    e_ref = torch.tensor(train.E, dtype=torch.float32)
    f_ref = torch.tensor(train.F.reshape(-1, 3), dtype=torch.float32)
    scale = float(model.energy_scale)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        energy, forces = energy_and_forces(model, pos, z, batch, num, training=True)
        e_loss = ((energy - e_ref) / scale).square().mean()
        f_loss = ((forces - f_ref) / scale).square().mean()
        (e_loss + f_loss).backward()
        optimizer.step()
        losses.append((e_loss.item(), f_loss.item()))
    losses = np.array(losses)
    assert np.isfinite(losses).all()
    start, end = losses[0], losses[-5:].mean(axis=0)
    assert end.sum() < 0.3 * start.sum(), losses
    assert end[1] < 0.8 * start[1], losses  # the forces are learned too, not only the energy offset


def test_default_radial_basis_resolves_bond_stretches() -> None:
    """The default basis is fine at bond lengths (1-1.5 Å), where bond-stretch forces are learned:
    neighbouring Gaussians must be < 0.15 Å apart there."""
    rbf = GeoPaTra().rbf
    r = torch.expm1(rbf.centres.double())  # centres in Å
    near_bonds = (r > 0.9) & (r < 1.6)
    spacing = torch.diff(r)[near_bonds[1:]]
    assert near_bonds.sum() >= 5 and spacing.max() < 0.15


def test_bessel_basis_is_smooth_everywhere_and_vanishes_beyond_its_range() -> None:
    """Values, first and second derivatives finite at r = 0 (self pairs) and continuous at r_max, where
    the envelope takes all three to zero; exactly zero beyond; the r -> 0 limit is n pi / r_max."""
    rbf = BesselRBF(8, 6.0).double()
    r = torch.tensor([0.0, 1e-6, 1.2, 5.999, 6.0, 6.5, 30.0], dtype=torch.float64, requires_grad=True)
    values = rbf(r)
    first = torch.autograd.grad(values.sum(), r, create_graph=True)[0]
    second = torch.autograd.grad(first.sum(), r)[0]
    assert torch.isfinite(values).all() and torch.isfinite(first).all() and torch.isfinite(second).all()
    expected = torch.arange(1, 9, dtype=torch.float64) * torch.pi / 6.0
    torch.testing.assert_close(values[0].detach(), expected, rtol=0, atol=1e-14)
    torch.testing.assert_close(values[1].detach(), expected, rtol=1e-9, atol=0)
    assert values[3].abs().max() < 1e-9 and first[3].abs() < 1e-6
    assert torch.all(values[4:] == 0) and first[4].abs() < 1e-20  # at r_max: the envelope's zero
    assert torch.all(first[5:] == 0) and torch.all(second[5:] == 0)  # beyond: exactly constant
    r = torch.tensor([0.7, 2.3, 5.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rbf, (r,)) and torch.autograd.gradgradcheck(rbf, (r,))
