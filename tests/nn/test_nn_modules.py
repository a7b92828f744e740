"""Grouping modules (`ProbabilisticSlotAttention`, `SlotAttention`, the AE baseline `FlatSlots`)
and the `GROUPINGS` registry.

Sizes are pairwise distinct (b=2, n=7, D=5, d=4, k=3) so a swapped axis cannot pass; the AE
baseline, which needs a square token grid, takes n = 16 (its own tests: test_nn_flat.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from probslot.nn import (
    GROUPINGS,
    ProbabilisticSlotAttention,
    SlotAttention,
    Standardize,
    build_grouping,
    em_step,
)
from probslot.nn.layers import prepare_grouping_inputs
from probslot.typing import SlotAttentionOutput, SlotPosterior

B, N, D, K, DS = 2, 7, 5, 3, 4

# (registry name, options, slot_dim): every option of every registered factory, alone, and the
# combinations the presets use (test_every_factory_option_is_swept checks the coverage)
CONFIGS = [
    ("sa", {}, DS),
    ("sa", {"mlp_hidden": 6, "eps": 1e-6}, DS),
    ("psa", {}, None),
    ("psa", {"query_proj": False}, None),
    ("psa", {"init": "standard"}, None),
    ("psa", {"variance": "map"}, None),
    ("psa", {"min_var": 1e-3}, None),
    ("psa", {"temperature": 2.5}, None),
    ("psa", {"standardize": True}, None),
    ("psa", {"prune_tau": 0.2, "prune_start": 2}, None),
    ("psa", {"merge_dist": 5.0, "merge_start": 2}, None),
    ("psa", {"coord_dims": 2}, None),
    ("psa", {"coord_dims": 2, "coord_weight": 0.0}, None),
    ("psa", {"coord_dims": 2, "coord_weight": 0.5}, None),
    ("psa", {"gru": True, "norm_slots": True}, None),
    ("psa", {"mlp": True, "mlp_hidden": 6}, None),
    ("psa", {"proj_init": "torch"}, None),
    # the demo preset and the ARD preset (configs/demo.yaml, configs/sprites_psa_ard.yaml)
    ("psa", {"temperature": 5.66, "standardize": True, "coord_dims": 2}, None),
    (
        "psa",
        {
            "temperature": 5.66,
            "standardize": True,
            "coord_dims": 2,
            "prune_tau": 0.05,
            "prune_start": 2,
            "merge_dist": 1.0,
        },
        None,
    ),  # fmt: skip
    ("psa-proj", {}, DS),
    ("psa-proj", {"variance": "map"}, DS),
    ("psa-proj", {"gru": True, "mlp": True, "norm_slots": True}, DS),
    ("psa-proj", {"gru": True, "init": "standard"}, DS),
    ("psa-proj", {"mlp": True, "mlp_hidden": 7, "min_var": 1e-3}, DS),
    ("psa-proj", {"proj_init": "torch"}, DS),
    (
        "psa-proj",
        {
            "temperature": 0.7,
            "standardize": True,
            "prune_tau": 0.1,
            "prune_start": 3,
            "merge_dist": 1.0,
            "merge_start": 3,
        },
        DS,
    ),  # fmt: skip
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o, _ in CONFIGS]
# the AE baseline: a square token grid (n = 16), a fixed K and no token-order invariance, so it
# is swept by the contract tests of its own below (and by tests/nn/test_nn_flat.py)
AE_CONFIGS = [
    ("ae", {}, DS),
    ("ae", {"pool": 2, "hidden": [6, 7]}, None),
]
AE_IDS = [
    f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o, _ in AE_CONFIGS
]
N_GRID = 16


def build(name: str, options: dict, slot_dim: int | None, iters: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_grouping(name, num_slots=K, dim=D, slot_dim=slot_dim, iters=iters, **options)


def mask_example() -> torch.Tensor:
    return torch.tensor(
        [[True, True, False, True, True, False, True], [False, True, True, True, True, True, True]]
    )


def seeded(module, *args, seed: int = 3, **kwargs):
    torch.manual_seed(seed)
    return module(*args, **kwargs)


def test_registry_names_and_suggestions() -> None:
    assert GROUPINGS.available() == ["ae", "psa", "psa-proj", "sa"]
    with pytest.raises(ValueError, match=r"unknown grouping 'psa_proj'. Did you mean 'psa-proj'"):
        GROUPINGS.get("psa_proj")
    with pytest.raises(ValueError, match=r"unknown option 'variant' for grouping 'psa'"):
        build_grouping("psa", K, D, variant="proj")
    with pytest.raises(ValueError, match=r"'temprature'.*Did you mean 'temperature'"):
        build_grouping("psa", K, D, temprature=2.0)
    assert build_grouping("psa", K, D).variant == "base"
    assert build_grouping("psa", K, D, query_proj=False).variant == "exact"
    assert build_grouping("psa-proj", K, D).variant == "proj"
    with pytest.raises(ValueError, match=r"query_proj=False needs the base 'psa' grouping"):
        build_grouping("psa-proj", K, D, query_proj=False)


def test_every_factory_option_is_swept() -> None:
    """The sweep below covers every keyword option of every registered factory."""
    import inspect

    # psa-proj takes these only to reject them with a clear message (one factory serves both)
    only_rejected = {"psa-proj": {"query_proj", "coord_dims", "coord_weight"}}
    for name in GROUPINGS.available():
        params = inspect.signature(GROUPINGS.get(name)).parameters
        options = (
            set(params) - {"num_slots", "dim", "slot_dim", "iters"} - only_rejected.get(name, set())
        )
        swept = set().union(*(o for n, o, _ in CONFIGS + AE_CONFIGS if n == name))
        assert options <= swept, f"{name}: options never swept: {sorted(options - swept)}"


@pytest.mark.parametrize(("name", "options", "slot_dim"), AE_CONFIGS, ids=AE_IDS)
def test_ae_forward_contract_gradients_and_bf16(name, options, slot_dim) -> None:
    module = build(name, options, slot_dim)
    d = module.slot_dim
    assert (module.num_slots, module.dim, d) == (K, D, slot_dim or D)
    x = torch.randn(B, N_GRID, D, requires_grad=True)
    mask = torch.ones(B, N_GRID, dtype=torch.bool)
    mask[0, [1, 6]] = False
    out = module(x, mask=mask)
    assert isinstance(out, SlotAttentionOutput)
    assert out.slots.shape == (B, K, d) and out.attn.shape == (B, K, N_GRID)
    torch.testing.assert_close(out.attn.sum(1), mask.float())
    loss = (out.slots * torch.randn_like(out.slots)).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got no gradient"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module(x.detach() * 3, mask=mask)
    assert torch.isfinite(low.slots).all() and torch.isfinite(low.attn).all()


@pytest.mark.parametrize(("name", "options", "slot_dim"), CONFIGS, ids=IDS)
def test_forward_contract_and_invariants(name, options, slot_dim) -> None:
    module = build(name, options, slot_dim)
    d = module.slot_dim
    assert (module.num_slots, module.dim) == (K, D)
    assert d == (slot_dim or D)
    x = torch.randn(B, N, D)
    out = module(x)
    assert out.slots.shape == (B, K, d) and out.attn.shape == (B, K, N)
    torch.testing.assert_close(out.attn.sum(1), torch.ones(B, N))
    assert (out.attn >= 0).all()
    if name == "sa":
        assert isinstance(out, SlotAttentionOutput)
    else:
        assert isinstance(out, SlotPosterior)
        assert out.var.shape == (B, K, d) and out.pi.shape == (B, K)
        if module.extension(Standardize) is None:  # σ² is floored in EM's own coordinates
            assert (out.var >= module.min_var).all()
        assert (out.pi >= 0).all()
        torch.testing.assert_close(out.pi.sum(-1), torch.ones(B))
        if not any(e.removes_slots for e in module.extensions):
            # pi is the mean responsibility over tokens (ARD and merging change it after)
            torch.testing.assert_close(out.pi, out.attn.mean(-1))
    # num_slots override
    out5 = module(x, num_slots=5)
    assert out5.slots.shape == (B, 5, d) and out5.attn.shape == (B, 5, N)


@pytest.mark.parametrize(("name", "options", "slot_dim"), CONFIGS, ids=IDS)
def test_every_parameter_gets_a_gradient(name, options, slot_dim) -> None:
    module = build(name, options, slot_dim)
    x = torch.randn(B, N, D, requires_grad=True)
    out = module(x, mask=mask_example())
    w = torch.randn_like(out.slots)
    loss = (out.slots * w).sum() + (out.attn * torch.randn_like(out.attn)).sum()
    if isinstance(out, SlotPosterior):
        loss = loss + (out.var * torch.randn_like(out.var)).sum()
        loss = loss + (out.pi * torch.randn_like(out.pi)).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in module.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize(("name", "options", "slot_dim"), CONFIGS, ids=IDS)
def test_no_nan_under_bf16_autocast(name, options, slot_dim) -> None:
    module = build(name, options, slot_dim)
    x = torch.randn(B, N, D) * 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x, mask=mask_example())
        loss = out.slots.float().square().mean()
    loss.backward()
    assert torch.isfinite(out.slots).all() and torch.isfinite(out.attn).all()
    if isinstance(out, SlotPosterior):
        assert out.var.dtype == torch.float32 and out.pi.dtype == torch.float32
        assert torch.isfinite(out.var).all() and (out.var > 0).all()
    for pname, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize(("name", "options", "slot_dim"), CONFIGS, ids=IDS)
def test_token_order_invariance(name, options, slot_dim) -> None:
    module = build(name, options, slot_dim).double()
    x = torch.randn(B, N, D, dtype=torch.float64)
    perm = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    mask = mask_example()
    out = seeded(module, x, mask=mask)
    outp = seeded(module, x[:, perm], mask=mask[:, perm])
    torch.testing.assert_close(outp.slots, out.slots)
    torch.testing.assert_close(outp.attn, out.attn[:, :, perm])
    if isinstance(out, SlotPosterior):
        torch.testing.assert_close(outp.var, out.var)
        torch.testing.assert_close(outp.pi, out.pi)


@pytest.mark.parametrize(("name", "options", "slot_dim"), CONFIGS, ids=IDS)
def test_slot_permutation_equivariance(name, options, slot_dim, monkeypatch) -> None:
    module = build(name, options, slot_dim).double()
    x = torch.randn(B, N, D, dtype=torch.float64)
    d = module.slot_dim
    mu0 = torch.randn(B, K, d, dtype=torch.float64)
    var0 = torch.rand(B, K, d, dtype=torch.float64) + 0.5
    perm = torch.tensor([2, 0, 1])

    def run(p):
        if isinstance(module, SlotAttention):
            monkeypatch.setattr(module, "initial_slots", lambda b, k, *draw: mu0[:, p])
        else:
            log_pi = torch.full((B, K), -math.log(K), dtype=torch.float64)
            monkeypatch.setattr(
                module,
                "initial_state",
                lambda b, k, dev, dt, *draw: (mu0[:, p], var0[:, p], log_pi),
            )
        return module(x, mask=mask_example())

    ident, permuted = run(torch.arange(K)), run(perm)
    torch.testing.assert_close(permuted.slots, ident.slots[:, perm])
    torch.testing.assert_close(permuted.attn, ident.attn[:, perm])
    if isinstance(ident, SlotPosterior):
        torch.testing.assert_close(permuted.var, ident.var[:, perm])
        torch.testing.assert_close(permuted.pi, ident.pi[:, perm])


@pytest.mark.parametrize(("name", "options", "slot_dim"), CONFIGS, ids=IDS)
def test_masked_tokens_are_ignored(name, options, slot_dim) -> None:
    """Padding tokens (garbage, even NaN/Inf) get no attention and do not move any slot."""
    module = build(name, options, slot_dim).double()
    x = torch.randn(1, N, D, dtype=torch.float64)
    pad = torch.randn(1, 4, D, dtype=torch.float64) * 100
    pad[0, 0, 0] = float("nan")
    pad[0, 1, 2] = float("inf")
    xp = torch.cat([x[:, :3], pad[:, :2], x[:, 3:], pad[:, 2:]], dim=1)  # (1, 11, D)
    mask = torch.ones(1, N + 4, dtype=torch.bool)
    mask[0, [3, 4, 9, 10]] = False
    ref = seeded(module, x)
    out = seeded(module, xp, mask=mask)
    torch.testing.assert_close(out.slots, ref.slots)
    assert (out.attn[:, :, ~mask[0]] == 0).all()
    torch.testing.assert_close(out.attn[:, :, mask[0]], ref.attn)
    if isinstance(out, SlotPosterior):
        torch.testing.assert_close(out.var, ref.var)
        torch.testing.assert_close(out.pi, ref.pi)


def test_learned_init_starts_at_the_papers_standard_init() -> None:
    """m = 0, log s = 0 at construction: the same draws as μ(0) ~ N(0, I), σ(0)² = 1."""
    learned, standard = build("psa-proj", {}, DS), build("psa-proj", {"init": "standard"}, DS)
    x = torch.randn(B, N, D)
    a, b = seeded(learned, x), seeded(standard, x)
    torch.testing.assert_close(a.mu, b.mu)
    torch.testing.assert_close(a.var, b.var)


def test_base_variant_without_query_proj_is_em_on_normed_tokens() -> None:
    """PSA base with query_proj=False (authors' code) is exactly iterated em_step on LayerNorm(z)."""
    module = build("psa", {"query_proj": False, "init": "standard"}, None, iters=4).double()
    x = torch.randn(B, N, D, dtype=torch.float64)
    out = seeded(module, x)
    z = torch.nn.functional.layer_norm(x, (D,))
    torch.manual_seed(3)
    mu = torch.randn(B, K, D, dtype=torch.float64)
    var = torch.ones(B, K, D, dtype=torch.float64)
    log_pi = torch.full((B, K), -math.log(K), dtype=torch.float64)
    for _ in range(4):
        step = em_step(z, z, mu, var, log_pi)
        mu, var, log_pi = step.mu, step.var, step.pi.log()
    torch.testing.assert_close(out.mu, mu)
    torch.testing.assert_close(out.var, var)
    torch.testing.assert_close(out.pi, step.pi)


def test_posterior_sample_and_active() -> None:
    out = build("psa-proj", {}, DS)(torch.randn(B, N, D))
    s = out.sample(torch.Generator().manual_seed(0))
    assert s.shape == (B, K, DS)
    assert out.active(0.0).shape == (B, K)
    with pytest.raises(ValueError, match=r"tau must be a number >= 0 and < 1.*got 1"):
        out.active(1.0)
    with pytest.raises(ValueError, match=r"tau must be a number >= 0 and < 1.*got -0.1"):
        out.active(-0.1)
    with pytest.raises(TypeError, match=r"tau must be a number.*got '0.1' \(str\)"):
        out.active("0.1")


@pytest.mark.parametrize("name", ["sa", "psa", "psa-proj"])
def test_gradcheck_float64_tiny(name) -> None:
    module = build(name, {"gru": True, "mlp": True} if name == "psa-proj" else {}, None, iters=2)
    module = module.double()
    x = torch.randn(1, 3, D, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True]])

    def fn(inp):
        out = seeded(module, inp, num_slots=2, mask=mask)
        extra = (out.var, out.pi) if isinstance(out, SlotPosterior) else ()
        return (out.slots, out.attn, *extra)

    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["sa", "psa", "psa-proj"])
def test_bad_forward_input(name) -> None:
    module = build(name, {}, None)
    x = torch.randn(B, N, D)
    with pytest.raises(
        ValueError, match=r"inputs must be 3-D \(batch, tokens, 5\); got shape \(7, 5\)"
    ):
        module(x[0])
    with pytest.raises(ValueError, match=r"feature size dim=5.*got shape \(2, 7, 6\)"):
        module(torch.randn(B, N, D + 1))
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"inputs must be finite; got NaN or Inf"):
        module(bad)
    bad[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"inputs must be finite; got NaN or Inf"):
        module(bad)
    with pytest.raises(ValueError, match=r"num_slots must be an integer >= 1; got 0"):
        module(x, num_slots=0)
    with pytest.raises(TypeError, match=r"num_slots must be an integer >= 1; got 2.5 \(float\)"):
        module(x, num_slots=2.5)
    with pytest.raises(TypeError, match=r"mask must have dtype torch.bool.*got torch.int64"):
        module(x, mask=torch.ones(B, N, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask must have shape \(b=2, n=7\).*got \(7, 2\)"):
        module(x, mask=torch.ones(N, B, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"at least one real token per image"):
        module(x, mask=torch.zeros(B, N, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"floating-point.*got dtype torch.int64"):
        module(torch.ones(B, N, D, dtype=torch.long))


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match=r"slot_dim must equal dim=5; got slot_dim=4"):
        ProbabilisticSlotAttention(K, D, slot_dim=4, variant="base")
    with pytest.raises(
        ValueError,
        match=r"variant must be one of \['proj', 'base', 'exact'\]; got 'Proj'. Did you mean 'proj'",
    ):
        ProbabilisticSlotAttention(K, D, variant="Proj")
    with pytest.raises(ValueError, match=r"variance must be one of \['mle', 'map'\]; got 'mlp'"):
        ProbabilisticSlotAttention(K, D, variance="mlp")
    with pytest.raises(ValueError, match=r"init must be one of \['learned', 'standard'\]"):
        ProbabilisticSlotAttention(K, D, init="xavier")
    with pytest.raises(ValueError, match=r"iters must be an integer >= 1; got 0"):
        ProbabilisticSlotAttention(K, D, iters=0)
    with pytest.raises(ValueError, match=r"min_var must be a number > 0; got -1"):
        ProbabilisticSlotAttention(K, D, min_var=-1)
    with pytest.raises(TypeError, match=r"extensions must hold EMExtension parts; got str"):
        ProbabilisticSlotAttention(K, D, extensions=["ard"])
    with pytest.raises(TypeError, match=r"refine must be a module with query_input"):
        ProbabilisticSlotAttention(K, D, refine=torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"num_slots must be an integer >= 1; got 0"):
        SlotAttention(0, D)
    with pytest.raises(TypeError, match=r"dim must be an integer >= 1; got 5.0 \(float\)"):
        SlotAttention(K, 5.0)


def test_huge_finite_inputs_pass_the_finiteness_check() -> None:
    """The fast check (a sum) overflows on huge finite values; the exact fallback accepts them."""
    x = torch.full((B, N, D), 3e37)
    assert not torch.isfinite(x.sum())
    out = prepare_grouping_inputs(x, D, None)
    assert out is x
    x[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"inputs must be finite"):
        prepare_grouping_inputs(x, D, None)


def test_slot_attention_matches_locatello_reference() -> None:
    """SA equals Locatello et al. (2020) Alg. 1 written out with the module's own weights."""
    module = build("sa", {}, DS).double()
    x = torch.randn(B, N, D, dtype=torch.float64)
    out = seeded(module, x)
    torch.manual_seed(3)
    slots = module.init_loc + module.init_log_scale.exp() * torch.randn(
        B, K, DS, dtype=torch.float64
    )
    z = torch.nn.functional.layer_norm(x, (D,), module.norm_inputs.weight, module.norm_inputs.bias)
    keys, values = z @ module.to_k.weight.T, z @ module.to_v.weight.T
    for _ in range(module.iters):
        q = module.norm_slots(slots) @ module.to_q.weight.T
        logits = torch.einsum("bkd,bnd->bkn", q, keys) / math.sqrt(DS)
        attn = logits.softmax(dim=1)
        weights = (attn + 1e-8) / (attn + 1e-8).sum(-1, keepdim=True)
        updates = torch.einsum("bkn,bnd->bkd", weights, values)
        slots = module.gru(updates.reshape(-1, DS), slots.reshape(-1, DS)).reshape(B, K, DS)
        slots = slots + module.mlp.net(module.mlp.norm(slots))
    torch.testing.assert_close(out.slots, slots)
    torch.testing.assert_close(out.attn, attn)
