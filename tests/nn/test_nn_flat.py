"""The AE baseline `FlatSlots` (grouping ``ae``): a dense reference, its errors, its contract.

Sizes are pairwise distinct (b=2, grid 6×6 → n=36, D=5, d=7, k=3, pool 2).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probslot.nn import GROUPINGS, FlatSlots, build_grouping
from probslot.typing import SlotAttentionOutput

B, SIDE, D, DS, K, POOL = 2, 6, 5, 7, 3, 2
N = SIDE * SIDE


def flat(**options) -> FlatSlots:
    torch.manual_seed(0)
    module = build_grouping("ae", K, D, slot_dim=DS, iters=1, pool=POOL, hidden=[11], **options)
    assert isinstance(module, FlatSlots)
    return module


def reference(module: FlatSlots, x: torch.Tensor, mask: torch.Tensor | None = None):
    """The slots written out densely: LayerNorm, the mean of each 3×3 cell over its real
    tokens, the MLP, a reshape."""
    z = F.layer_norm(x, (D,), module.norm_inputs.weight, module.norm_inputs.bias)
    grid = z.reshape(B, SIDE, SIDE, D)  # row-major tokens
    real = (torch.ones(B, N, dtype=torch.bool) if mask is None else mask).reshape(B, SIDE, SIDE)
    cell = SIDE // POOL
    means = []
    for i in range(POOL):
        for j in range(POOL):
            rows, cols = slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell)
            block, keep = grid[:, rows, cols], real[:, rows, cols, None].to(x.dtype)
            block = torch.where(keep.bool(), block, 0.0)  # padding may hold NaN
            means.append((block * keep).sum((1, 2)) / keep.sum((1, 2)))  # (b, D)
    pooled = torch.stack(means, dim=-1)  # (b, D, pool·pool), as the flattened (b, D, pool, pool)
    first, act, last = module.mlp
    return last(act(first(pooled.flatten(1)))).reshape(B, K, DS)


def test_slots_match_a_dense_reference_and_attention_is_uniform() -> None:
    module = flat().double()
    x = torch.randn(B, N, D, dtype=torch.float64)
    out = module(x)
    assert isinstance(out, SlotAttentionOutput)
    assert out.slots.shape == (B, K, DS) and out.attn.shape == (B, K, N)
    torch.testing.assert_close(out.slots, reference(module, x))
    assert torch.equal(out.attn, torch.full((B, K, N), 1.0 / K, dtype=torch.float64))
    assert out.gates is None and out.keep_prob is None
    assert (module.num_slots, module.dim, module.slot_dim) == (K, D, DS)


def test_the_slots_have_no_random_initialisation() -> None:
    module = flat().train()
    x = torch.randn(B, N, D)
    torch.manual_seed(1)
    a = module(x)
    torch.manual_seed(2)
    b = module(x, draw="random")
    assert torch.equal(a.slots, b.slots)


def test_masked_tokens_are_left_out_of_the_cell_means() -> None:
    module = flat().double()
    x = torch.randn(B, N, D, dtype=torch.float64)
    mask = torch.ones(B, N, dtype=torch.bool)
    assert torch.equal(module(x, mask=mask).slots, module(x).slots)
    # padding (garbage, even NaN) in image 0: its cells average its real tokens only
    mask[0, [0, 7, 20]] = False
    padded = x.clone()
    padded[0, 0, 0] = float("nan")
    padded[0, 7] = 1e6
    out = module(padded, mask=mask)
    torch.testing.assert_close(out.slots, reference(module, padded, mask))
    torch.testing.assert_close(out.slots[1], module(x).slots[1])
    assert (out.attn[0, :, ~mask[0]] == 0).all()
    torch.testing.assert_close(out.attn.sum(1), mask.double())


def test_a_different_num_slots_is_refused() -> None:
    module = flat()
    x = torch.randn(B, N, D)
    assert module(x, num_slots=K).slots.shape == (B, K, DS)
    with pytest.raises(ValueError, match=r"fixed number of slots .* got num_slots=5.*or 3"):
        module(x, num_slots=5)


def test_a_non_square_grid_is_refused() -> None:
    module = flat()
    with pytest.raises(ValueError, match=r"square token grid .* got n = 35 tokens"):
        module(torch.randn(B, 35, D))
    with pytest.raises(ValueError, match=r"token grid \(1×1\) is smaller than the pooled grid"):
        module(torch.randn(B, 1, D))
    with pytest.raises(ValueError, match=r"inputs must have feature size dim=5"):
        module(torch.randn(B, N, D + 1))


def test_factory_options_are_checked() -> None:
    assert "ae" in GROUPINGS.available()
    with pytest.raises(ValueError, match=r"pool must be an integer >= 1"):
        build_grouping("ae", K, D, pool=0)
    with pytest.raises(ValueError, match=r"hidden must be a non-empty list"):
        build_grouping("ae", K, D, hidden=[])
    with pytest.raises(ValueError, match=r"unknown option 'pol' for grouping 'ae'.*'pool'"):
        build_grouping("ae", K, D, pol=2)
    # iters is part of the contract and has no effect
    a, b = build_grouping("ae", K, D, iters=1), build_grouping("ae", K, D, iters=4)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
