"""The studies' analysis pieces against oracles: cross-seed pairs, posterior distance, Pareto."""

from __future__ import annotations

import pytest
import torch

from probslot.experiments.analysis import cell, mean_std, pairwise_identifiability
from probslot.experiments.stability import posterior_distance
from probslot.experiments.toy2d import Toy2DModel, _log_likelihood, encode_toy, toy_test_set
from probslot.experiments.tradeoff import pareto_front


def _affine_copy(slots: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """slots (m, k, d) under a random invertible affine map and a random slot order per image."""
    gen = torch.Generator().manual_seed(seed)
    m, k, d = slots.shape
    a = torch.randn(d, d, generator=gen, dtype=torch.float64) + 2 * torch.eye(
        d, dtype=torch.float64
    )
    c = torch.randn(d, generator=gen, dtype=torch.float64)
    perm = torch.stack([torch.randperm(k, generator=gen) for _ in range(m)])
    mapped = slots @ a + c
    return mapped.gather(1, perm[..., None].expand(m, k, d)), perm


def test_mean_std_and_cell():
    st = mean_std([1.0, 2.0, None, float("nan"), 3.0])
    assert st["mean"] == 2.0 and st["std"] == pytest.approx(1.0) and st["n"] == 3
    assert cell(st) == "2.000 ± 1.000"
    assert cell(mean_std([0.5])) == "0.500" and cell(mean_std([])) == "–"


def test_pairwise_identifiability_is_one_for_affine_copies_and_low_for_unrelated():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(300, 3, 4, generator=gen, dtype=torch.float64)
    copies = [base, _affine_copy(base, 1)[0], _affine_copy(base, 2)[0]]
    res = pairwise_identifiability(copies, ["a", "b", "c"], krr=False)
    assert [p["runs"] for p in res["smcc"]["pairs"]] == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert res["smcc"]["mean"] == pytest.approx(1.0, abs=1e-6)
    assert res["r2"]["mean"] == pytest.approx(1.0, abs=1e-6)
    # the mean over pairs is the mean of the pairs' figures (each the mean of both directions)
    assert res["smcc"]["mean"] == pytest.approx(sum(p["smcc"] for p in res["smcc"]["pairs"]) / 3)
    unrelated = [base, torch.randn(300, 3, 4, generator=gen, dtype=torch.float64)]
    low = pairwise_identifiability(unrelated, ["a", "z"], krr=False)
    assert low["smcc"]["mean"] < 0.5
    assert abs(low["smcc"]["mean"] - low["smcc_chance"]["mean"]) < 0.15
    with pytest.raises(ValueError, match="at least 2 runs"):
        pairwise_identifiability([base], ["a"])


def test_posterior_distance_zero_up_to_scale_shift_permutation_and_large_when_shuffled():
    gen = torch.Generator().manual_seed(3)
    m, k, d = 400, 3, 2
    mu = torch.randn(m, k, d, generator=gen) * 3
    var = torch.rand(m, k, d, generator=gen) * 0.2 + 0.05
    pi = torch.softmax(torch.randn(m, k, generator=gen), -1)
    scale, shift = torch.tensor([2.0, 0.5]), torch.tensor([1.0, -3.0])
    perm = torch.stack([torch.randperm(k, generator=gen) for _ in range(m)])
    take = lambda x: x.gather(1, perm[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    a = {"mu": mu, "var": var, "pi": pi}
    b = {"mu": take(mu * scale + shift), "var": take(var * scale**2), "pi": pi.gather(1, perm)}
    same = posterior_distance(a, b)
    assert same["mean_error"] == pytest.approx(0.0, abs=1e-6)
    assert same["bhattacharyya"] == pytest.approx(0.0, abs=1e-4)
    order = torch.randperm(m, generator=gen)
    shuffled = posterior_distance(a, {key: v[order] for key, v in b.items()})
    assert shuffled["mean_error"] > 0.5


def test_pareto_front_against_brute_force():
    gen = torch.Generator().manual_seed(5)
    pts = [tuple(p) for p in torch.rand(12, 2, generator=gen).tolist()]
    front = set(pareto_front(pts))
    for i, (m, s) in enumerate(pts):
        dominated = any(
            m2 <= m and s2 >= s and (m2, s2) != (m, s) for j, (m2, s2) in enumerate(pts) if j != i
        )
        assert (i in front) == (not dominated)
    assert pareto_front([(0.1, 0.9), (0.2, 0.5), (0.05, 0.4)]) == [0, 2]


def test_toy_restarts_never_lower_the_likelihood_and_find_the_modes():
    settings = {"num_test": 40, "points_per_mode": 32}
    points, labels = toy_test_set(settings)
    torch.manual_seed(0)
    model = Toy2DModel(3, 2, 10)
    one = encode_toy(model, points, labels, 1)
    best = encode_toy(model, points, labels, 6)
    assert torch.all(best["loglik"] >= one["loglik"] - 1e-4)
    z = model.encoder(points)
    for draw in range(6):  # the kept fit is the best of the six per item
        _, post = model(points, draw=draw)
        assert torch.all(best["loglik"] >= _log_likelihood(model, z, post) - 1e-3)
    # untrained, the linear encoder keeps the modes apart: EM's best start finds all three
    found = [len(set(r.tolist()) - {-1}) == 3 for r in best["modes"]]
    assert sum(found) / len(found) >= sum(
        len(set(r.tolist()) - {-1}) == 3 for r in one["modes"]
    ) / len(found)
    assert torch.allclose(best["pi"].sum(-1), torch.ones(40), atol=1e-5)  # on the simplex
