"""Symmetries priced before they are paid: candidate subgroups, the time budget, the solver's use of it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from geopatra.models.sgdml import SGDML
from geopatra.models.sgdml.pricing import ProductPrice, candidate_groups, within_budget
from geopatra.models.sgdml.symmetries import close_group

BUNDLED = Path(__file__).parents[1] / "geopatra" / "data" / "bundled" / "ac_ala3_nhme_gfn2xtb.npz"


def _three_rotors() -> np.ndarray:
    """The 27-element group of three independent 3-cycles on 9 atoms (three methyl rotors)."""
    n = 9
    generators = []
    for start in (0, 3, 6):
        perm = np.arange(n)
        perm[start : start + 3] = [start + 1, start + 2, start]
        generators.append(perm)
    return close_group(np.vstack([np.arange(n)[None], *generators]), 1000)


def test_candidate_groups_are_nested_subgroups_from_identity_to_the_group() -> None:
    group = _three_rotors()
    assert len(group) == 27
    groups = candidate_groups(group)
    assert [len(g) for g in groups] == [1, 3, 9, 27]
    members = {tuple(p) for p in group.tolist()}
    for g in groups:
        assert np.array_equal(g[0], np.arange(9))  # identity first
        assert {tuple(p) for p in g.tolist()} <= members
        assert len(close_group(g, 1000)) == len(g)  # closed under composition: a subgroup


def test_within_budget_takes_the_largest_group_that_fits() -> None:
    prices = [ProductPrice(np.zeros((s, 3), dtype=np.int64), seconds, 8)
              for s, seconds in ((1, 0.1), (3, 0.3), (9, 1.0))]
    assert within_budget(prices, 0.5).n_perms == 3
    assert within_budget(prices, 5.0).n_perms == 9
    assert within_budget(prices, 0.01).n_perms == 1  # nothing fits: the smallest group


@pytest.mark.parametrize("budget, kept", [(None, "all"), (1e-9, 1)])
def test_iterative_fit_prices_the_group_and_keeps_what_the_budget_allows(budget, kept, caplog) -> None:
    if not BUNDLED.exists():
        pytest.skip("bundled Ac-Ala3-NHMe dataset not generated yet")
    d = np.load(BUNDLED)
    frames = np.linspace(0, len(d["R"]) - 1, 24).round().astype(int)  # spread out: the methyl rotors turn
    R, z, E, F = d["R"][frames], d["z"], d["E"].reshape(-1)[frames], d["F"][frames]
    model = SGDML(sigmas=[20.0], max_symmetries=27, max_product_seconds=budget, solver="iterative",
                  solver_max_iter=20, sigma_search_size=None)
    with caplog.at_level(logging.INFO):
        model.fit(R, z, E, F)
    prices = model.product_prices_
    sizes = [p.n_perms for p in prices]
    assert sizes[0] == 1 and sizes == sorted(sizes) and sizes[-1] > 1  # identity ... detected group
    assert all(p.seconds > 0 and p.measured_frames == 24 for p in prices)
    assert "one kernel product on 24 geometries" in caplog.text
    expected = sizes[-1] if kept == "all" else kept
    assert int(model.n_perms) == expected
    if budget is not None:
        assert "keeping 1 of" in caplog.text


def test_exact_fit_does_not_price_and_bad_budget_raises() -> None:
    d = np.load(Path(__file__).parent / "data" / "ethanol_ccsd_t-train.npz")
    model = SGDML(sigmas=[20.0], max_product_seconds=1e-9, solver="exact").fit(d["R"][:10], d["z"], None, d["F"][:10])
    assert model.product_prices_ == [] and int(model.n_perms) > 1  # the exact solver ignores the budget
    with pytest.raises(ValueError, match="max_product_seconds"):
        SGDML(max_product_seconds=0.0)


def test_price_extrapolates_the_fixed_and_the_quadratic_cost(monkeypatch) -> None:
    """A product of ``a + c m²`` seconds on m geometries is priced ``a + c M²`` at M from two samples
    (a fixed cost scaled by (M / m)² instead would overestimate a small group's price many times)."""
    from geopatra.models.sgdml import pricing

    a, c = 2e-3, 1e-6
    timed = []

    def fake(R, perms, m, sigma, device, repeats):
        timed.append(m)
        return a + c * m**2

    monkeypatch.setattr(pricing, "_time_product", fake)
    R = torch.zeros(1000, 3, 3, dtype=torch.float64)
    (price,) = pricing.price_products(R, [np.arange(3)[None]], sigma=10.0, device=torch.device("cpu"))
    assert timed == [256, 128] and price.measured_frames == 256
    assert price.seconds == pytest.approx(a + c * 1000**2, rel=1e-9)
    timed.clear()
    (small,) = pricing.price_products(R[:100], [np.arange(3)[None]], sigma=10.0, device=torch.device("cpu"))
    assert timed == [100] and small.seconds == pytest.approx(a + c * 100**2)  # all geometries: timed as is
