"""Gated alpha compositing (AdaSlot) in the additive decoders and a slot autoencoder with a
learned keep gate; the AE preset; configs with either, and their saved runs.

Sizes are pairwise distinct (b=2, k=3, d=5, images 8×8 → 4×4 tokens).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

import probslot
from probslot.config import RunConfig, dump_config
from probslot.decoders import DECODERS
from probslot.decoders.common import gated_softmax
from probslot.io import RunPaths, save_model_weights
from probslot.models import ModelConfig, build_model
from probslot.nn import FlatSlots, KeepGate
from probslot.posterior.pruning import count_flops
from probslot.typing import SlotPosterior
from tiny_runs import TINY_ENCODER as ENCODER
from tiny_runs import tiny_model

B, K, D, S = 2, 3, 5, 8
ADDITIVE = {
    "broadcast": {"init_size": 2, "channels": [6, 7, 4], "kernel_size": 3},
    "broadcast-mlp": {"hidden": [6]},
}
HARD = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def decoder(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return DECODERS.build(name, slot_dim=D, image_size=S, **ADDITIVE[name]).double()


def tiny(preset: str = "PSA", **fields) -> torch.nn.Module:
    fields.setdefault("decoder_kwargs", ADDITIVE["broadcast"])
    return tiny_model(preset, image_size=S, num_slots=K, slot_dim=D, **fields)


# ---------------------------------------------------------------------- the decoder
@pytest.mark.parametrize("name", sorted(ADDITIVE))
@pytest.mark.parametrize("grad", [False, True])
def test_gates_of_one_give_the_plain_decoder_bit_for_bit(name, grad) -> None:
    dec = decoder(name)
    slots = torch.randn(B, K, D, dtype=torch.float64)
    keep = torch.tensor([[True, False, True], [True, True, True]])
    for k in (None, keep):
        plain = dec(slots, keep=k)
        ones = dec(slots, keep=k, gates=torch.ones(B, K, dtype=torch.float64, requires_grad=grad))
        assert torch.equal(ones.recon, plain.recon)
        assert torch.equal(ones.masks, plain.masks)
        assert torch.equal(ones.per_slot, plain.per_slot)


@pytest.mark.parametrize("name", sorted(ADDITIVE))
def test_hard_gates_equal_decoding_only_the_kept_slots(name) -> None:
    dec = decoder(name)
    slots = torch.randn(B, K, D, dtype=torch.float64)
    gates = HARD.double().requires_grad_(True)  # the soft path: every slot decoded
    out = dec(slots, gates=gates)
    ref = dec(slots, keep=HARD.bool())
    torch.testing.assert_close(out.recon, ref.recon)
    torch.testing.assert_close(out.masks, ref.masks)
    assert (out.masks[~HARD.bool()] == 0).all()


def test_soft_gates_weigh_the_alphas_as_adaslot() -> None:
    """masks_k = g_k e^{α_k} / Σ_j g_j e^{α_j}, written out densely."""
    torch.manual_seed(3)
    logits = torch.randn(B, K, 1, S, S, dtype=torch.float64) * 3
    logits[0, 1] = float("-inf")  # a skipped slot
    gates = torch.tensor([[0.3, 1.0, 0.0], [0.9, 0.05, 0.6]], dtype=torch.float64)
    weighted = gates[:, :, None, None, None] * logits.exp()
    expected = weighted / weighted.sum(1, keepdim=True)
    torch.testing.assert_close(gated_softmax(logits, gates), expected)
    torch.testing.assert_close(gated_softmax(logits, gates.requires_grad_(True)), expected)


def test_gradients_of_soft_compositing_match_the_quotient_and_are_finite_at_zero() -> None:
    torch.manual_seed(4)
    logits = (torch.randn(B, K, 1, S, S, dtype=torch.float64) * 2).requires_grad_(True)
    gates = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.4]], dtype=torch.float64)
    gates.requires_grad_(True)
    w = torch.randn(B, K, 1, S, S, dtype=torch.float64)
    (gated_softmax(logits, gates) * w).sum().backward()
    g_logits, g_gates = logits.grad.clone(), gates.grad.clone()
    # the reference: the quotient itself, differentiated by autograd
    logits.grad, gates.grad = None, None
    weighted = gates[:, :, None, None, None] * logits.exp()
    ((weighted / weighted.sum(1, keepdim=True)) * w).sum().backward()
    torch.testing.assert_close(g_gates, gates.grad)
    torch.testing.assert_close(g_logits, logits.grad)
    assert torch.isfinite(g_gates).all() and (g_gates[gates.detach() == 0] != 0).all()


def test_gates_are_checked() -> None:
    dec = decoder("broadcast")
    slots = torch.randn(B, K, D, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"gates must be a float tensor"):
        dec(slots, gates=HARD.long())
    with pytest.raises(ValueError, match=r"gates must have shape \(batch, slots\) = \(2, 3\)"):
        dec(slots, gates=torch.ones(B, K + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"images \[1\] break this"):
        dec(slots, gates=torch.tensor([[1.0, 0, 0], [0, 0, 0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"images \[0\] break this"):
        dec(slots, gates=torch.tensor([[1.0, -0.5, 0], [0, 1, 0]], dtype=torch.float64))


# ---------------------------------------------------------------------- the model
def test_training_gradients_reach_the_gate_through_the_reconstruction() -> None:
    model = tiny("PSA", keep_gate={"penalty": 0.0}).train()
    images = torch.rand(B, 3, S, S)
    torch.manual_seed(1)
    out = model(images)
    assert isinstance(out.grouping, SlotPosterior) and out.grouping.gates.requires_grad
    model.loss(images, out).backward()  # no penalty: the reconstruction's gradient alone
    gate = model.grouping
    assert isinstance(gate, KeepGate)
    for pname, p in gate.score.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_eval_decodes_only_the_kept_slots_and_saves_their_compute() -> None:
    model = tiny("PSA", keep_gate={}).eval()
    with torch.no_grad():
        model.grouping.score[-1].weight.zero_()
        model.grouping.score[-1].bias.copy_(torch.tensor([-1.0]))  # all off: argmax alone
    images = torch.rand(B, 3, S, S)
    with torch.no_grad():
        out, flops = count_flops(model, images)
        post = model.encode(images)
        ref, ref_flops = count_flops(model.decode, post.slots, keep=post.gates.bool())
        _, all_flops = count_flops(model.decode, post.slots)
    assert torch.equal(out.grouping.gates.sum(1), torch.ones(B))
    assert torch.equal(out.recon, ref.recon) and torch.equal(out.masks, ref.masks)
    assert (out.per_slot[~post.gates.bool()] == 0).all()
    assert ref_flops < all_flops / 2


def test_a_gate_that_keeps_every_slot_changes_nothing() -> None:
    plain, gated = tiny("PSA"), tiny("PSA", keep_gate={})
    assert not isinstance(plain.grouping, KeepGate)
    # the same weights (the gate's inner grouping under grouping.inner), without the score MLP
    state = {
        k.replace("grouping.inner.", "grouping."): v
        for k, v in gated.state_dict().items()
        if not k.startswith("grouping.score.")
    }
    plain.load_state_dict(state, strict=True)
    with torch.no_grad():
        gated.grouping.score[-1].weight.zero_()
        gated.grouping.score[-1].bias.fill_(5.0)  # every slot kept
    images = torch.rand(B, 3, S, S)
    plain.eval(), gated.eval()
    with torch.no_grad():
        a, b = plain(images), gated(images)
    assert torch.equal(b.grouping.gates, torch.ones(B, K))
    assert torch.equal(a.recon, b.recon) and torch.equal(a.masks, b.masks)
    assert torch.equal(a.grouping.mu, b.grouping.mu)


def test_a_keep_gate_needs_an_additive_decoder() -> None:
    with pytest.raises(ValueError, match=r"decoder 'noa' has none. Set decoder to one of"):
        ModelConfig(preset="PSA-NoA", keep_gate={})
    from probslot.decoders import NonAdditiveDecoder
    from probslot.models import SlotAutoencoder

    model = tiny("PSA", keep_gate={})
    noa = NonAdditiveDecoder(
        D, S, init_size=2, slot_channels=[6], feature_dim=4, channels=[6, 7, 4]
    )
    with pytest.raises(ValueError, match=r"keep gate weighs the alpha masks"):
        SlotAutoencoder(model.encoder, model.grouping, noa, num_slots=K)


# ---------------------------------------------------------------------- configs and saved runs
def test_keep_gate_config_is_checked_and_round_trips() -> None:
    assert ModelConfig().keep_gate is None
    cfg = ModelConfig(preset="SA", keep_gate={"penalty": 0.2, "temperature": 0.5, "hidden": 9})
    d = dataclasses.asdict(cfg)
    assert ModelConfig(**d) == cfg
    assert ModelConfig(**yaml.safe_load(yaml.safe_dump(d))) == cfg
    assert cfg.resolve().keep_gate == cfg.keep_gate
    for gate, error, match in [
        ({"penalti": 1.0}, ValueError, r"unknown option 'penalti' .*Did you mean 'penalty'"),
        ({"penalty": -1.0}, ValueError, r"keep_gate.penalty must be a number >= 0"),
        ({"temperature": 0}, ValueError, r"keep_gate.temperature must be a number > 0"),
        ({"hidden": 2.5}, TypeError, r"keep_gate.hidden must be an integer >= 1"),
        (True, TypeError, r"keep_gate must be None \(no gate\) or a dict"),
    ]:
        with pytest.raises(error, match=match):
            ModelConfig(keep_gate=gate)


def test_ae_preset_builds_the_ae_baseline() -> None:
    model = tiny("AE")
    assert isinstance(model.grouping, FlatSlots)
    r = ModelConfig(preset="AE").resolve()
    assert (r.grouping, r.decoder, r.likelihood, r.iters) == ("ae", "broadcast", "mse", 1)
    out = model(torch.rand(B, 3, S, S))
    assert out.recon.shape == (B, 3, S, S) and out.masks.shape == (B, K, 1, S, S)
    torch.testing.assert_close(out.attn_masks, torch.full((B, K, S, S), 1 / K))
    with pytest.raises(ValueError, match=r"fixed number of slots"):
        model(torch.rand(B, 3, S, S), num_slots=K + 1)
    wide = ModelConfig(
        preset="AE",
        image_size=[S, 2 * S],
        num_slots=K,
        slot_dim=D,
        encoder_kwargs=dict(ENCODER),
        decoder_kwargs={"init_size": [2, 4], "channels": [6, 7, 4]},
    )
    with pytest.raises(ValueError, match=r"square token grid .* n = 32 tokens"):
        build_model(wide)(torch.rand(B, 3, S, 2 * S))


RUN = {
    "data": {"name": "sprites", "image_size": S, "num_train": 4, "num_val": 2, "num_test": 2},
    "model": {
        "image_size": S,
        "num_slots": K,
        "slot_dim": D,
        "iters": 2,
        "encoder_kwargs": ENCODER,
        "decoder_kwargs": ADDITIVE["broadcast"],
    },
}


@pytest.mark.parametrize(
    "model",
    [
        {"preset": "AE"},
        {"preset": "PSA", "keep_gate": {"penalty": 0.3, "hidden": 6}},
        {"preset": "SA", "keep_gate": {}},
        {"preset": "AE", "keep_gate": {"temperature": 0.5}},
    ],
    ids=["AE", "PSA+gate", "SA+gate", "AE+gate"],
)
def test_saved_runs_load_with_the_same_outputs(model, tmp_path: Path) -> None:
    data = copy.deepcopy(RUN)
    data["model"].update(model)
    data["trainer"] = {"output_dir": str(tmp_path), "run_name": "run"}
    cfg = RunConfig.from_dict(data)
    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    paths.config.write_text(dump_config(cfg))
    torch.manual_seed(0)
    built = build_model(cfg.model).eval()
    save_model_weights(built, paths.weights)
    loaded = probslot.load_model(paths.root)
    assert type(loaded.grouping) is type(built.grouping)
    if "keep_gate" in model:
        assert isinstance(loaded.grouping, KeepGate)
        assert loaded.grouping.penalty == model["keep_gate"].get("penalty", 0.1)
    images = torch.rand(B, 3, S, S)
    with torch.no_grad():
        a, b = built(images), loaded(images)
    assert torch.equal(a.recon, b.recon)
    if a.grouping.gates is not None:
        assert torch.equal(a.grouping.gates, b.grouping.gates)
