"""The relevance rule of Eq. 7 (`probslot.relevance.relevant`), the one used everywhere."""

from __future__ import annotations

import pytest
import torch

from probslot.relevance import relevant
from probslot.typing import SlotPosterior


def test_strict_threshold_of_eq_7():
    pi = torch.tensor([[0.6, 0.02, 0.35, 0.03], [0.01, 0.5, 0.04, 0.45]])
    expected = torch.tensor([[True, False, True, False], [False, True, False, True]])
    assert torch.equal(relevant(pi, 0.05), expected)
    # π exactly at τ is not relevant (strict inequality of Eq. 7)
    assert torch.equal(relevant(torch.tensor([[0.05, 0.95]]), 0.05), torch.tensor([[False, True]]))


def test_an_image_where_no_slot_passes_keeps_its_largest_slot():
    pi = torch.tensor([[0.3, 0.3, 0.4], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]])
    keep = relevant(pi, 0.6)
    assert torch.equal(keep, torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.bool))
    # a tie keeps the first of the largest
    assert torch.equal(relevant(torch.tensor([[0.5, 0.5]]), 0.7), torch.tensor([[True, False]]))


def test_tau_zero_keeps_every_live_slot_and_no_dead_one():
    pi = torch.tensor([[0.7, 0.2, 0.1, 1e-9], [0.25, 0.25, 0.25, 0.25], [0.6, 0.4, 0.0, 0.0]])
    assert torch.equal(relevant(pi, 0.0), pi > 0)
    assert relevant(pi, 1e-6).sum().item() == 3 + 4 + 2


def test_against_a_loop_reference_on_random_weights():
    g = torch.Generator().manual_seed(0)
    pi = torch.rand(50, 6, generator=g) * (torch.rand(50, 6, generator=g) > 0.3)
    pi = pi / pi.sum(-1, keepdim=True).clamp_min(1e-12)
    for tau in (0.0, 0.05, 0.2, 0.5, 0.9):
        keep = relevant(pi, tau)
        for row, k in zip(pi, keep):
            want = [float(p) > tau for p in row]
            if not any(want):
                want[int(row.argmax())] = True
            assert k.tolist() == want
        assert keep.any(-1).all()  # every image keeps a slot


def test_slot_posterior_active_is_the_same_rule():
    pi = torch.tensor([[0.3, 0.3, 0.4], [0.02, 0.9, 0.08]])
    post = SlotPosterior(
        mu=torch.zeros(2, 3, 4), var=torch.ones(2, 3, 4), pi=pi, attn=torch.zeros(2, 3, 5)
    )
    for tau in (0.0, 0.05, 0.35, 0.95):
        assert torch.equal(post.active(tau), relevant(pi, tau))


@pytest.mark.parametrize(
    ("tau", "error"), [(-0.1, ValueError), (1.0, ValueError), ("0.1", TypeError), (True, TypeError)]
)
def test_bad_tau_is_rejected(tau, error):
    with pytest.raises(error, match=r"tau must be a number >= 0 and < 1"):
        relevant(torch.full((2, 3), 1 / 3), tau)


def test_bad_pi_is_rejected():
    with pytest.raises(ValueError, match=r"pi must be a \(batch, slots\) tensor.*got \(3,\)"):
        relevant(torch.full((3,), 1 / 3), 0.1)
