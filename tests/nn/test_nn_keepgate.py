"""`KeepGate` (AdaSlot's learned slot selection) around PSA, SA and the AE baseline.

Sizes are pairwise distinct (b=3, n=16, D=5, d=4 for SA/AE, k=7).
"""

from __future__ import annotations

import pytest
import torch

from probslot.nn import KeepGate, build_grouping, keep_gate_of, unwrap_grouping
from probslot.typing import SlotAttentionOutput, SlotPosterior

B, N, D, K = 3, 16, 5, 7
INNER = {"psa": None, "sa": 4, "ae": 4}  # grouping → slot_dim


def gated(name: str = "sa", **options) -> KeepGate:
    torch.manual_seed(0)
    inner = build_grouping(name, num_slots=K, dim=D, slot_dim=INNER[name], iters=2)
    return KeepGate(inner, **options)


def set_logits(gate: KeepGate, bias: float) -> None:
    """Make every keep logit `bias` (zero last-layer weights)."""
    last = gate.score[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(bias)


@pytest.mark.parametrize("name", sorted(INNER))
def test_the_inner_output_passes_through_with_gates_added(name) -> None:
    gate = gated(name).eval()
    x = torch.randn(B, N, D)
    out = gate(x)
    ref = gate.inner(x)
    assert type(out) is type(ref)
    assert isinstance(out, SlotPosterior if name == "psa" else SlotAttentionOutput)
    assert torch.equal(out.slots, ref.slots) and torch.equal(out.attn, ref.attn)
    if name == "psa":
        assert torch.equal(out.pi, ref.pi) and torch.equal(out.var, ref.var)
    assert out.gates.shape == out.keep_prob.shape == (B, K)
    torch.testing.assert_close(out.keep_prob, torch.sigmoid(gate.logits(ref.slots)))
    assert (gate.num_slots, gate.dim, gate.slot_dim) == (K, D, ref.slots.shape[-1])
    assert unwrap_grouping(gate) is gate.inner and unwrap_grouping(gate.inner) is gate.inner


def test_eval_gates_are_deterministic_and_threshold_keep_prob() -> None:
    gate = gated("psa").eval()
    x = torch.randn(B, N, D)
    a, b = gate(x), gate(x)
    assert torch.equal(a.gates, b.gates)
    expected = (a.keep_prob > 0.5).float()
    rows = expected.sum(1) > 0
    assert torch.equal(a.gates[rows], expected[rows])
    assert set(a.gates.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("train", [False, True])
def test_every_image_keeps_at_least_its_most_probable_slot(train) -> None:
    gate = gated("sa").train(train)
    set_logits(gate, -30.0)  # every slot would be dropped
    with torch.no_grad():
        gate.score[-1].bias.fill_(-30.0)
        gate.score[-1].weight[0, 0] = 1.0  # distinct logits, so argmax is meaningful
    x = torch.randn(B, N, D)
    out = gate(x)
    assert torch.equal(out.gates.sum(1), torch.ones(B))
    kept = out.gates.argmax(1)
    assert torch.equal(kept, out.keep_prob.argmax(1))


def test_training_gates_are_hard_with_a_straight_through_gradient() -> None:
    gate = gated("sa").train()
    x = torch.randn(B, N, D)
    out = gate(x)
    assert set(out.gates.detach().unique().tolist()) <= {0.0, 1.0}
    # gradient of the gates: that of the Gumbel-sigmoid sample (finite, non-zero) reaches the MLP
    (out.gates * torch.randn(B, K)).sum().backward()
    for pname, p in gate.score.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_training_gates_keep_each_slot_with_probability_keep_prob() -> None:
    """P(ℓ + logistic noise > 0) = σ(ℓ) at any temperature: the hard sample is Bernoulli(σ(ℓ))."""
    for temperature in (0.3, 2.0):
        gate = gated("sa", temperature=temperature).train()
        set_logits(gate, 0.8)
        x = torch.randn(1, N, D).expand(4000, N, D)
        torch.manual_seed(7)
        with torch.no_grad():
            out = gate(x)
        share = out.gates.mean().item()
        assert share == pytest.approx(torch.sigmoid(torch.tensor(0.8)).item(), abs=0.02)


def test_grouping_arguments_reach_the_inner_grouping() -> None:
    gate = gated("psa").eval()
    x = torch.randn(B, N, D)
    a, b = gate(x, draw=3), gate.inner(x, draw=3)
    assert torch.equal(a.mu, b.mu)
    assert gate(x, num_slots=4).gates.shape == (B, 4)


def test_options_and_wrapping_are_checked() -> None:
    inner = build_grouping("sa", num_slots=K, dim=D)
    with pytest.raises(ValueError, match=r"keep_gate.penalty must be a number >= 0; got -1"):
        KeepGate(inner, penalty=-1.0)
    with pytest.raises(ValueError, match=r"keep_gate.temperature must be a number > 0; got 0"):
        KeepGate(inner, temperature=0.0)
    with pytest.raises(ValueError, match=r"keep_gate.hidden must be an integer >= 1"):
        KeepGate(inner, hidden=0)
    with pytest.raises(TypeError, match=r"not another KeepGate"):
        KeepGate(KeepGate(inner))
    with pytest.raises(TypeError, match=r"Linear has no .num_slots"):
        KeepGate(torch.nn.Linear(2, 3))
    gate = KeepGate(inner, penalty=0.3, temperature=0.5, hidden=9)
    assert (gate.penalty, gate.temperature, gate.hidden) == (0.3, 0.5, 9)
    assert "penalty=0.3" in repr(gate)

    class Model(torch.nn.Module):
        def __init__(self, grouping):
            super().__init__()
            self.grouping = grouping

    assert keep_gate_of(Model(gate)) is gate and keep_gate_of(Model(inner)) is None
