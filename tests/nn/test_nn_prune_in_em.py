"""ARD inside EM (`prune_tau`): small slots are switched off between iterations and not decoded."""

import pytest
import torch

from grouping_helpers import flat_psa  # noqa: E402
from probslot.nn import ARDPrune, MomentMerge
from probslot.nn.extensions import merge_slots, prune_weights


def test_prune_weights_zeroes_small_slots_keeps_the_largest_and_renormalises() -> None:
    pi = torch.tensor([[0.50, 0.30, 0.15, 0.05], [0.02, 0.03, 0.01, 0.94], [0.2, 0.2, 0.3, 0.3]])
    out = prune_weights(pi, 0.1)
    expected = torch.tensor([[0.50, 0.30, 0.15, 0.0], [0.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.3, 0.3]])
    expected = expected / expected.sum(-1, keepdim=True)
    torch.testing.assert_close(out, expected)
    # every slot below tau: only the largest survives
    torch.testing.assert_close(
        prune_weights(torch.tensor([[0.3, 0.4, 0.3]]), 0.5), torch.tensor([[0.0, 1.0, 0.0]])
    )


def _both(first, second, x: torch.Tensor, seed: int):
    """Both modules' outputs on x with the same weights and the same initial slots."""
    second.load_state_dict(first.state_dict())
    outs = []
    with torch.no_grad():
        for module in (first, second):
            torch.manual_seed(seed)
            outs.append(module(x))
    return outs


def test_prune_tau_zero_is_the_plain_algorithm() -> None:
    x = torch.randn(2, 11, 6)
    plain = flat_psa(4, 6, iters=3)
    a, b = _both(plain, flat_psa(4, 6, iters=3, prune_tau=0.0), x, seed=1)
    torch.testing.assert_close(a.mu, b.mu)
    torch.testing.assert_close(a.pi, b.pi)


def test_pruned_slots_have_zero_weight_and_claim_no_tokens_afterwards() -> None:
    g = torch.Generator().manual_seed(5)
    centres = 3.0 * torch.randn(2, 8, generator=g)
    labels = torch.randint(0, 2, (3, 40), generator=g)
    x = centres[labels] + 0.2 * torch.randn(3, 40, 8, generator=g)
    m = flat_psa(5, 8, iters=4, variant="base", prune_tau=0.1)
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
    with pytest.raises(ValueError, match=r"prune_tau must be a number >= 0 and < 1.*got 1.5"):
        flat_psa(3, 8, prune_tau=1.5)


def _two_clusters(seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(2, 8, generator=g)
    labels = torch.randint(0, 2, (3, 40), generator=g)
    return centres[labels] + 0.2 * torch.randn(3, 40, 8, generator=g)


def test_prune_start_at_the_last_iteration_only_thresholds_the_final_weights() -> None:
    x = _two_clusters()
    plain = flat_psa(5, 8, iters=4, variant="base")
    late = flat_psa(5, 8, iters=4, variant="base", prune_tau=0.1, prune_start=4)
    a, b = _both(plain, late, x, seed=2)
    # three plain iterations and a plain fourth M-step: the same means, variances, attention
    torch.testing.assert_close(b.mu, a.mu)
    torch.testing.assert_close(b.attn, a.attn)
    torch.testing.assert_close(b.pi, prune_weights(a.pi, 0.1))


def test_prune_start_before_the_last_iteration_hands_pruned_tokens_to_survivors() -> None:
    x = _two_clusters()
    m = flat_psa(5, 8, iters=4, variant="base", prune_tau=0.1, prune_start=3)
    with torch.no_grad():
        torch.manual_seed(2)
        post = m(x)
    dead = post.pi == 0
    assert dead.any()
    # a slot pruned after iteration 3 takes no token in iteration 4's E-step
    assert post.attn[dead].abs().max() < 1e-6
    torch.testing.assert_close(post.attn.sum(1), torch.ones(3, 40))


@pytest.mark.parametrize(("bad", "error"), [(0, ValueError), (5, ValueError), (1.5, TypeError)])
def test_prune_start_outside_the_iterations_is_rejected(bad, error) -> None:
    with pytest.raises(error, match="prune_start must be an integer >= 1 and <= 4"):
        flat_psa(5, 8, iters=4, prune_tau=0.1, prune_start=bad)


# ---------------------------------------------------------------------- merging inside EM
def test_merge_slots_joins_coinciding_appearance_and_moment_matches() -> None:

    # slots 0 and 2 share their appearance (first 3 features) and differ in position (last 2)
    mu = torch.tensor(
        [[[1.0, 2.0, 3.0, -0.5, 0.5], [5.0, -1.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 0.5, -0.5]]]
    )
    var = torch.tensor(
        [[[0.5, 0.5, 0.5, 0.1, 0.1], [1.0, 1.0, 1.0, 0.2, 0.2], [0.5, 0.5, 0.5, 0.3, 0.1]]]
    )
    pi = torch.tensor([[0.3, 0.5, 0.2]])
    new_mu, new_var, new_pi = merge_slots(mu, var, pi, dist=0.1, app_dims=3, min_var=1e-6)
    torch.testing.assert_close(new_pi, torch.tensor([[0.5, 0.5, 0.0]]))  # 0 (larger π) is the root
    w = torch.tensor([0.3, 0.2]) / 0.5
    pair_mu, pair_var = mu[0, [0, 2]], var[0, [0, 2]]
    mean = (w[:, None] * pair_mu).sum(0)
    second = (w[:, None] * (pair_var + pair_mu.square())).sum(0) - mean.square()
    torch.testing.assert_close(new_mu[0, 0], mean)
    torch.testing.assert_close(new_var[0, 0], second)
    torch.testing.assert_close(new_mu[0, 1], mu[0, 1])  # a distinct slot is untouched
    torch.testing.assert_close(new_var[0, 1], var[0, 1])


def test_merge_slots_is_complete_linkage_and_leaves_dead_slots_dead() -> None:

    # appearance 0.0, 0.3, 0.6 in one feature, unit variances: neighbours are 0.045 apart,
    # the ends 0.18; with dist 0.1, 1 joins 0 (largest π) but 2, close to 1 only, may not
    # chain onto that group: it stays a slot of its own
    mu = torch.tensor([[[0.0], [0.3], [0.6], [9.0]]])
    var = torch.ones(1, 4, 1)
    pi = torch.tensor([[0.5, 0.3, 0.2, 0.0]])  # slot 3 is dead
    new_mu, _, new_pi = merge_slots(mu, var, pi, dist=0.1, app_dims=1, min_var=1e-6)
    torch.testing.assert_close(new_pi, torch.tensor([[0.8, 0.0, 0.2, 0.0]]))
    torch.testing.assert_close(new_mu[0, 0, 0], torch.tensor((0.5 * 0.0 + 0.3 * 0.3) / 0.8))
    torch.testing.assert_close(new_mu[0, 2], mu[0, 2])
    torch.testing.assert_close(new_mu[0, 3], mu[0, 3])
    # all three pairwise within dist: one group
    wide = merge_slots(mu, var, pi, dist=0.2, app_dims=1, min_var=1e-6)
    torch.testing.assert_close(wide[2], torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    # nothing within dist: the inputs come back unchanged
    same = merge_slots(mu, var, pi, dist=0.01, app_dims=1, min_var=1e-6)
    assert same[2] is pi


def _greedy_complete_linkage(dij: torch.Tensor, pi: torch.Tensor, dist: float) -> list[int]:
    """Loop reference: the root of each slot of one image (dead slots are their own)."""
    k = pi.numel()
    target = list(range(k))
    groups: list[list[int]] = []
    for j in sorted(range(k), key=lambda i: -float(pi[i])):
        if pi[j] <= 0:
            continue
        for members in groups:  # in creation order = decreasing π of the root
            if all(bool(dij[j, m] < dist) for m in members):
                members.append(j)
                target[j] = members[0]
                break
        else:
            groups.append([j])
    return target


def test_merge_slots_matches_a_loop_reference_on_random_mixtures() -> None:

    g = torch.Generator().manual_seed(11)
    b, k, d, app = 64, 7, 5, 3
    mu = torch.randn(b, k, d, generator=g).mul(0.6).round()  # rounded: many near-ties in μ
    var = torch.rand(b, k, d, generator=g) + 0.5
    pi = torch.rand(b, k, generator=g) * (torch.rand(b, k, generator=g) > 0.2)
    pi[:, 0] += 0.01  # at least one live slot
    pi = pi / pi.sum(-1, keepdim=True)
    dist = 0.4
    new_mu, new_var, new_pi = merge_slots(mu, var, pi, dist=dist, app_dims=app, min_var=1e-6)
    dij = (
        (mu[:, :, None, :app] - mu[:, None, :, :app]).square()
        / (var[:, :, None, :app] + var[:, None, :, :app])
    ).mean(-1)
    merged_any = False
    for i in range(b):
        target = torch.tensor(_greedy_complete_linkage(dij[i], pi[i], dist))
        want_pi = torch.zeros(k).scatter_add(0, target, pi[i])
        torch.testing.assert_close(new_pi[i], want_pi)
        for r in range(k):
            group = (target == r) & (pi[i] > 0)
            if want_pi[r] == 0:
                continue
            w = pi[i, group] / want_pi[r]
            mean = (w[:, None] * mu[i, group]).sum(0)
            second = (w[:, None] * (var[i, group] + mu[i, group].square())).sum(0)
            torch.testing.assert_close(new_mu[i, r], mean)
            torch.testing.assert_close(new_var[i, r], (second - mean.square()).clamp_min(1e-6))
            merged_any |= int(group.sum()) > 1
    assert merged_any  # the draw exercises merging at all
    torch.testing.assert_close(new_pi.sum(-1), torch.ones(b))  # π stays on the simplex


def test_merge_inside_em_hands_merged_tokens_to_the_root() -> None:
    from probslot.layers import cell_centres

    # one plain background (all tokens alike in appearance) over a 6×6 grid
    g = torch.Generator().manual_seed(3)
    tokens = torch.cat(
        [0.01 * torch.randn(2, 36, 4, generator=g), cell_centres(6, 6).expand(2, -1, -1)], -1
    )
    kwargs = dict(iters=4, variant="base", coord_dims=2, standardize=True)
    plain = flat_psa(4, 6, **kwargs)
    merged = flat_psa(4, 6, **kwargs, merge_dist=1.0, merge_start=3)
    a, b = _both(plain, merged, tokens, seed=0)
    assert (a.pi > 0.05).sum(1).min() >= 2  # plain EM splits the background by position
    assert ((b.pi > 0).sum(1) == 1).all()  # merging keeps one slot for it
    torch.testing.assert_close(b.pi.sum(-1), torch.ones(2))
    # the same first three iterations alone: the slots merged away after iteration 3 ...
    three = flat_psa(4, 6, **{**kwargs, "iters": 3}, merge_dist=1.0)
    three.load_state_dict(plain.state_dict())
    with torch.no_grad():
        torch.manual_seed(0)
        dead = three(tokens).pi == 0
    assert dead.any()
    assert b.attn[dead].abs().max() < 1e-6  # ... claim no token in iteration 4


def test_merge_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="merge_dist must be a number >= 0"):
        flat_psa(3, 8, merge_dist=-1.0)
    with pytest.raises(ValueError, match="merge_start"):
        flat_psa(3, 8, iters=3, merge_dist=1.0, merge_start=4)
    merge = flat_psa(3, 8, iters=3, merge_dist=1.0).extension(MomentMerge)
    assert (merge.dist, merge.start) == (1.0, None)  # None: after the last iteration only
    ard = flat_psa(3, 8, iters=3, prune_tau=0.2, prune_start=2).extension(ARDPrune)
    assert (ard.tau, ard.start) == (0.2, 2)
