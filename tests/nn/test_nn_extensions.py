"""The PSA core and its parts: a dense reference of the whole loop, per-call parts and
temperature, `with_settings`, the extension contract, repr and the structure contract.

Sizes are pairwise distinct (b=2, n=11, d=5, k=3) so a swapped axis cannot pass.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from probslot.nn import (
    ARDPrune,
    EMExtension,
    EMState,
    MomentMerge,
    PositionalPSA,
    ProbabilisticSlotAttention,
    SlotRefinement,
    Standardize,
    TemperedEStep,
    with_settings,
)
from probslot.relevance import relevant

B, N, D, K = 2, 11, 5, 3


def seeded(module, *args, seed: int = 4, **kwargs):
    torch.manual_seed(seed)
    with torch.no_grad():
        return module(*args, **kwargs)


def dense_step(x, mu, var, log_pi, temperature, min_var):
    """One EM step on tokens x (b, n, d), written with a (b, k, n, d) tensor (paper Alg. 1)."""
    var = var.clamp_min(min_var)
    diff = x[:, None] - mu[:, :, None]  # (b, k, n, d)
    log_n = -0.5 * ((diff**2 / var[:, :, None]).sum(-1) + var.log().sum(-1)[..., None])
    log_n = log_n - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    attn = torch.softmax((log_pi[..., None] + log_n) / temperature, dim=1)  # (b, k, n)
    # em_step adds 1e-12 per token before normalising over tokens, so a dead slot (π = 0)
    # is re-centred on the data instead of on its vanishing responsibilities
    a_hat = (attn + 1e-12) / (attn + 1e-12).sum(-1, keepdim=True)
    new_mu = torch.einsum("bkn,bnd->bkd", a_hat, x)
    new_var = torch.einsum("bkn,bknd->bkd", a_hat, (x[:, None] - new_mu[:, :, None]) ** 2)
    return new_mu, new_var.clamp_min(min_var), attn.mean(-1), attn


def test_the_loop_with_standardize_temperature_and_ard_matches_a_dense_reference():
    """exact EM on z (no projections) + Standardize + TemperedEStep + ARDPrune from iteration 2,
    against the same algorithm written out densely."""
    tau, temp, iters = 0.25, 2.0, 4
    parts = [Standardize(), TemperedEStep(temp), ARDPrune(tau, start=2)]
    module = ProbabilisticSlotAttention(
        K, D, iters=iters, variant="exact", init="standard", extensions=parts
    ).double()
    g = torch.Generator().manual_seed(0)
    centres = 4.0 * torch.randn(2, D, generator=g, dtype=torch.float64)
    x = centres[torch.randint(0, 2, (B, N), generator=g)]
    x = x + 0.3 * torch.randn(B, N, D, generator=g, dtype=torch.float64)
    out = seeded(module, x)

    z = torch.nn.functional.layer_norm(x, (D,))
    shift = z.mean(1, keepdim=True)
    scale = ((z - shift) ** 2).mean(1, keepdim=True).add(1e-6).sqrt()
    u = (z - shift) / scale  # per-image standardised tokens
    torch.manual_seed(4)
    mu = torch.randn(B, K, D, dtype=torch.float64)
    var = torch.ones(B, K, D, dtype=torch.float64)
    log_pi = torch.full((B, K), -math.log(K), dtype=torch.float64)
    for t in range(1, iters + 1):
        mu, var, pi, attn = dense_step(u, mu, var, log_pi, temp, module.min_var)
        if t >= 2:
            pi = pi * relevant(pi, tau)
            pi = pi / pi.sum(-1, keepdim=True)
        log_pi = pi.clamp_min(torch.finfo(pi.dtype).tiny).log()
    assert (pi == 0).any(), "two clusters and three slots: ARD must prune a slot here"
    torch.testing.assert_close(out.mu, mu * scale + shift)
    torch.testing.assert_close(out.var, var * scale**2)
    torch.testing.assert_close(out.pi, pi)
    torch.testing.assert_close(out.attn, attn)


def test_per_call_parts_equal_a_module_built_with_them_and_never_change_the_module():
    x = torch.randn(B, N, D)
    plain = ProbabilisticSlotAttention(K, D, iters=3, variant="base")
    parts = (Standardize(), TemperedEStep(3.0), MomentMerge(0.5), ARDPrune(0.2))
    built = ProbabilisticSlotAttention(K, D, iters=3, variant="base", extensions=parts)
    built.load_state_dict(plain.state_dict())
    a, b = seeded(plain, x, extensions=parts), seeded(built, x)
    for f in ("mu", "var", "pi", "attn"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert len(plain.extensions) == 0  # the call did not write into the module
    c = seeded(built, x, extensions=())  # and () switches every part off for one call
    d = seeded(plain, x)
    assert torch.equal(c.mu, d.mu) and torch.equal(c.pi, d.pi)
    with pytest.raises(ValueError, match=r"prune_start must be an integer >= 1 and <= 3; got 4"):
        plain(x, extensions=[ARDPrune(0.1, start=4)])  # per-call parts are checked too
    with pytest.raises(TypeError, match="extensions must be a sequence of EMExtension"):
        plain(x, extensions=ARDPrune(0.1))


def test_temperature_argument_equals_the_tempered_part_and_wins_over_it():
    x = torch.randn(B, N, D)
    plain = ProbabilisticSlotAttention(K, D, iters=3)
    tempered = ProbabilisticSlotAttention(K, D, iters=3, extensions=[TemperedEStep(2.5)])
    tempered.load_state_dict(plain.state_dict())
    a, b = seeded(plain, x, temperature=2.5), seeded(tempered, x)
    assert torch.equal(a.attn, b.attn) and torch.equal(a.mu, b.mu)
    c, d = seeded(tempered, x, temperature=1.0), seeded(plain, x)
    assert torch.equal(c.attn, d.attn)  # an explicit temperature overrides the part
    assert not torch.allclose(a.attn, d.attn, atol=1e-4)
    with pytest.raises(ValueError, match=r"temperature must be a number > 0; got 0"):
        plain(x, temperature=0.0)
    with pytest.raises(ValueError, match=r"temperature must be a number > 0; got -1"):
        TemperedEStep(-1.0)


def test_with_settings_adds_replaces_and_removes_parts_in_order():
    base = (Standardize(), TemperedEStep(2.0))
    ard = with_settings(base, prune_tau=0.1, prune_start=2)
    assert [type(p) for p in ard] == [Standardize, TemperedEStep, ARDPrune]
    assert (ard[-1].tau, ard[-1].start) == (0.1, 2)
    assert ard[0] is base[0] and ard[1] is base[1]  # untouched parts are shared, not copied
    both = with_settings(ard, merge_dist=1.5)
    assert [type(p) for p in both] == [Standardize, TemperedEStep, MomentMerge, ARDPrune]
    assert both[-1] is ard[-1]  # unchanged settings keep the part itself
    moved = with_settings(both, prune_tau=0.3)
    assert (moved[-1].tau, moved[-1].start) == (0.3, 2)  # the start is kept
    assert with_settings(both, prune_tau=0.0, merge_dist=0.0) == base
    merge = with_settings((MomentMerge(1.0, start=2),), merge_dist=2.0)[0]
    assert (merge.dist, merge.start) == (2.0, 2)
    with pytest.raises(ValueError, match=r"prune_tau must be a number >= 0 and < 1"):
        with_settings(base, prune_tau=1.5)
    with pytest.raises(TypeError, match=r"prune_start must be an integer >= 1; got 1.5"):
        with_settings(base, prune_tau=0.1, prune_start=1.5)
    with pytest.raises(ValueError, match=r"merge_dist must be a number >= 0"):
        with_settings(base, merge_dist=-1.0)


def test_a_new_extension_needs_only_the_hooks_it_uses():
    """The guide's example (docs/architecture.md): a part that records π after each iteration."""

    class RecordPi(EMExtension):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[int, torch.Tensor]] = []

        def after_iteration(self, t: int, state: EMState) -> EMState:
            self.seen.append((t, state.pi))
            return state

    record = RecordPi()
    module = ProbabilisticSlotAttention(K, D, iters=3, extensions=[record])
    out = seeded(module, torch.randn(B, N, D))
    assert [t for t, _ in record.seen] == [1, 2, 3]
    assert torch.equal(record.seen[-1][1], out.pi)
    assert "RecordPi()" in repr(module)


def test_repr_shows_every_non_default_setting():
    module = PositionalPSA(
        4, 7, iters=5, coord_dims=2, coord_weight=0.5, variance="map", init="standard",
        min_var=1e-3, refine=SlotRefinement(7, gru=True, mlp=True, mlp_hidden=9),
        extensions=[Standardize(), TemperedEStep(5.66), MomentMerge(1.0, start=4), ARDPrune(0.05, start=3)],
    )  # fmt: skip
    module.init_projections("torch")
    text = repr(module)
    for setting in (
        "num_slots=4", "dim=7", "slot_dim=7", "iters=5", "variant='base'", "variance='map'",
        "init='standard'", "min_var=0.001", "proj_init='torch'", "coord_dims=2",
        "coord_weight=0.5", "Standardize()", "TemperedEStep(temperature=5.66)",
        "MomentMerge(dist=1, start=4)", "ARDPrune(tau=0.05, start=3)", "GRUCell(7, 7)",
        "out_features=9",
    ):  # fmt: skip
        assert setting in text, f"{setting} missing from\n{text}"
    default = repr(ProbabilisticSlotAttention(3, 5))
    assert "num_slots=3, dim=5, slot_dim=5, iters=3\n" in default
    assert "variance" not in default and "extensions" in default


def test_structure_contract_of_the_core():
    """The paper's EM stays readable: ≤ 10 constructor parameters, forward on one screen."""
    params = inspect.signature(ProbabilisticSlotAttention.__init__).parameters
    assert len(params) - 1 <= 10, list(params)
    lines = inspect.getsource(ProbabilisticSlotAttention.forward).splitlines()
    assert len(lines) <= 40, f"forward has {len(lines)} lines"


def test_refinement_options_are_validated():
    with pytest.raises(ValueError, match="needs at least one of gru, mlp, norm_slots"):
        SlotRefinement(4)
    with pytest.raises(ValueError, match="mlp_hidden=8 needs mlp=True"):
        SlotRefinement(4, gru=True, mlp_hidden=8)
    with pytest.raises(TypeError, match=r"gru must be True or False; got 1 \(int\)"):
        SlotRefinement(4, gru=1)


def test_state_dicts_of_0_1_0_with_refinements_load():
    """probslot 0.1.0 kept gru/mlp/norm_slots on the module: their keys are mapped on load."""
    module = ProbabilisticSlotAttention(
        K, D, 4, refine=SlotRefinement(4, gru=True, mlp=True, norm_slots=True)
    )
    old = {k.replace("refine.", ""): torch.randn_like(v) for k, v in module.state_dict().items()}
    assert "gru.weight_ih" in old and "norm_slots.weight" in old and "mlp.net.0.weight" in old
    module.load_state_dict(old, strict=True)
    assert torch.equal(module.refine.gru.weight_ih, old["gru.weight_ih"])
    assert torch.equal(module.refine.mlp.net[0].weight, old["mlp.net.0.weight"])


@pytest.mark.parametrize("name", ["psa", "psa-proj", "sa"])
def test_eval_mode_is_deterministic_and_training_draws_at_random(name):
    from probslot.nn import build_grouping

    module = build_grouping(name, K, D, iters=2)
    x = torch.randn(B, N, D)
    module.eval()
    with torch.no_grad():
        torch.manual_seed(1)
        a = module(x)
        torch.manual_seed(2)
        b = module(x)
        c = module(x[1:])  # an image's slots do not depend on its batch
        d = module(x, draw=0)
        e = module(x, draw=3)
        torch.manual_seed(1)
        f = module(x, draw="random")
        torch.manual_seed(1)
        g = module(x, draw="random")
    assert torch.equal(a.slots, b.slots) and torch.equal(a.slots, d.slots)
    torch.testing.assert_close(c.slots, a.slots[1:])
    assert not torch.allclose(e.slots, a.slots)  # another fixed draw
    assert torch.equal(f.slots, g.slots) and not torch.allclose(f.slots, a.slots)
    module.train()
    with torch.no_grad():
        h, i = module(x), module(x)
    assert not torch.allclose(h.slots, i.slots)  # training draws afresh every call
    with pytest.raises(ValueError, match=r"draw must be an integer >= 0"):
        module(x, draw=-1)
    with pytest.raises(TypeError, match=r"draw must be an integer >= 0.*got 'fixed'"):
        module(x, draw="fixed")
