"""Hungarian slot matching: vectorised costs against a dense reference, mask matching."""

import itertools

import pytest
import torch

from probslot.metrics import (
    hungarian,
    match_masks,
    match_slots,
    match_slots_mapped,
    pairwise_cost,
    permute_slots,
)

M, K, D = 13, 4, 3


def test_pairwise_cost_matches_loops():
    a, b = torch.randn(M, K, D), torch.randn(M, K, D)
    cost = pairwise_cost(a, b)
    ref = torch.stack(
        [
            torch.stack(
                [torch.stack([(a[i, p] - b[i, q]).norm() for q in range(K)]) for p in range(K)]
            )
            for i in range(M)
        ]
    )
    torch.testing.assert_close(cost, ref.double(), atol=1e-5, rtol=1e-5)
    cos = pairwise_cost(a, b, "cosine")
    assert cos.shape == (M, K, K) and (cos >= -1e-9).all() and (cos <= 2 + 1e-9).all()
    with pytest.raises(ValueError, match="cost must be"):
        pairwise_cost(a, b, "manhattan")


def test_hungarian_is_optimal_by_brute_force():
    cost = torch.rand(M, K, K, dtype=torch.float64)
    perm = hungarian(cost)
    for i in range(M):
        best = min(
            sum(cost[i, r, c].item() for r, c in enumerate(p))
            for p in itertools.permutations(range(K))
        )
        got = sum(cost[i, r, perm[i, r]].item() for r in range(K))
        assert got == pytest.approx(best)


def test_match_slots_undoes_a_permutation():
    a = torch.randn(M, K, D)
    shuffle = torch.argsort(torch.rand(M, K), dim=1)
    b = permute_slots(a, shuffle)
    res = match_slots(a, b)
    assert torch.equal(permute_slots(b, res.perm), a)
    assert res.cost.shape == (M,) and res.cost.abs().max() < 1e-4


def test_match_slots_mapped_handles_affine_frames_and_other_dims():
    m = 64
    a = torch.randn(m, K, D, dtype=torch.float64)
    shuffle = torch.argsort(torch.rand(m, K), dim=1)
    b = permute_slots(a, shuffle) @ torch.randn(D, D + 2, dtype=torch.float64) + 3.0
    perm = match_slots_mapped(a, b).perm
    assert torch.equal(perm, torch.argsort(shuffle, dim=1))
    with pytest.raises(ValueError, match="at least d_b \\+ 2"):
        match_slots_mapped(a[:4], b[:4])


def test_match_masks_by_iou():
    masks = torch.zeros(2, 3, 5, 7)
    masks[:, 0, :2] = 1
    masks[:, 1, 2:4] = 1
    masks[:, 2, 4:] = 1
    order = torch.tensor([[2, 0, 1], [1, 2, 0]])
    res = match_masks(masks, permute_slots(masks.flatten(2), order).reshape(2, 3, 5, 7))
    assert torch.equal(res.perm, torch.argsort(order, dim=1))
    torch.testing.assert_close(res.cost, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="masks must both have shape"):
        match_masks(masks, masks[:, :2])
