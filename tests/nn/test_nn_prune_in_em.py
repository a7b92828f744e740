"""ARD inside EM (`prune_tau`): small slots are switched off between iterations and not decoded."""

import pytest
import torch

from probslot.nn import ProbabilisticSlotAttention
from probslot.nn.psa import _prune_weights


def test_prune_weights_zeroes_small_slots_keeps_the_largest_and_renormalises() -> None:
    pi = torch.tensor([[0.50, 0.30, 0.15, 0.05], [0.02, 0.03, 0.01, 0.94], [0.2, 0.2, 0.3, 0.3]])
    out = _prune_weights(pi, 0.1)
    expected = torch.tensor([[0.50, 0.30, 0.15, 0.0], [0.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.3, 0.3]])
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(out, expected)
    # every slot below tau: only the largest survives
    torch.testing.assert_close(
        _prune_weights(torch.tensor([[0.3, 0.4, 0.3]]), 0.5), torch.tensor([[0.0, 1.0, 0.0]])
    )


def test_prune_tau_zero_is_the_plain_algorithm() -> None:
    x = torch.randn(2, 11, 6)
    plain = ProbabilisticSlotAttention(4, 6, iters=3)
    pruned = ProbabilisticSlotAttention(4, 6, iters=3, prune_tau=0.0)
    pruned.load_state_dict(plain.state_dict())
    torch.manual_seed(1)
    a = plain(x)
    torch.manual_seed(1)
    b = pruned(x)
    torch.testing.assert_close(a.mu, b.mu)
    torch.testing.assert_close(a.pi, b.pi)


def test_pruned_slots_have_zero_weight_and_claim_no_tokens_afterwards() -> None:
    g = torch.Generator().manual_seed(5)
    centres = 3.0 * torch.randn(2, 8, generator=g)
    labels = torch.randint(0, 2, (3, 40), generator=g)
    x = centres[labels] + 0.2 * torch.randn(3, 40, 8, generator=g)
    m = ProbabilisticSlotAttention(5, 8, iters=4, variant="base", prune_tau=0.1)
    with torch.no_grad():
        post = m(x)
    torch.testing.assert_close(post.pi.sum(-1), torch.ones(3))
    assert ((post.pi == 0) | (post.pi >= 0.1)).all()
    assert (post.pi == 0).any(), "two clusters and five slots: some slots must be pruned"


def test_autoencoder_skips_slots_pruned_inside_em() -> None:
    from probslot.models import ModelConfig, build_model

    cfg = ModelConfig(
        preset="PSA",
        image_size=[16, 16],
        num_slots=4,
        slot_dim=6,
        iters=2,
        likelihood="mse",
        grouping_kwargs={"prune_tau": 0.3},
        encoder_kwargs={"channels": [4, 6], "kernel_sizes": [3, 3], "strides": [1, 2]},
        decoder_kwargs={"channels": [4, 6], "init_size": 8, "kernel_size": 3},
    )
    model = build_model(cfg)
    out = model(torch.rand(3, 3, 16, 16))
    dead = out.grouping.pi == 0
    assert dead.any()
    assert torch.all(out.masks[dead] == 0)
    torch.testing.assert_close(out.masks.sum(1), torch.ones_like(out.masks.sum(1)))


def test_prune_tau_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"tau must be in \[0, 1\).*got 1.5"):
        ProbabilisticSlotAttention(3, 8, prune_tau=1.5)


def _two_clusters(seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(2, 8, generator=g)
    labels = torch.randint(0, 2, (3, 40), generator=g)
    return centres[labels] + 0.2 * torch.randn(3, 40, 8, generator=g)


def test_prune_start_at_the_last_iteration_only_thresholds_the_final_weights() -> None:
    x = _two_clusters()
    plain = ProbabilisticSlotAttention(5, 8, iters=4, variant="base")
    late = ProbabilisticSlotAttention(5, 8, iters=4, variant="base", prune_tau=0.1, prune_start=4)
    late.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.manual_seed(2)
        a = plain(x)
        torch.manual_seed(2)
        b = late(x)
    # three plain iterations and a plain fourth M-step: the same means, variances, attention
    torch.testing.assert_close(b.mu, a.mu)
    torch.testing.assert_close(b.attn, a.attn)
    torch.testing.assert_close(b.pi, _prune_weights(a.pi, 0.1))


def test_prune_start_before_the_last_iteration_hands_pruned_tokens_to_survivors() -> None:
    x = _two_clusters()
    m = ProbabilisticSlotAttention(5, 8, iters=4, variant="base", prune_tau=0.1, prune_start=3)
    with torch.no_grad():
        torch.manual_seed(2)
        post = m(x)
    dead = post.pi == 0
    assert dead.any()
    # a slot pruned after iteration 3 takes no token in iteration 4's E-step
    assert post.attn[dead].abs().max() < 1e-6
    torch.testing.assert_close(post.attn.sum(1), torch.ones(3, 40))


@pytest.mark.parametrize("bad", [0, 5, 1.5])
def test_prune_start_outside_the_iterations_is_rejected(bad) -> None:
    with pytest.raises(ValueError, match="prune_start"):
        ProbabilisticSlotAttention(5, 8, iters=4, prune_tau=0.1, prune_start=bad)
