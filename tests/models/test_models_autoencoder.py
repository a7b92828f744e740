"""SlotAutoencoder: sweep over groupings and presets, output contract, image checks, determinism."""

import dataclasses

import pytest
import torch

from probslot.decoders import DECODERS
from probslot.models import ModelConfig, SlotAutoencoder, available_presets, build_model
from probslot.nn import GROUPINGS
from probslot.typing import AutoencoderOutput, SlotAttentionOutput, SlotPosterior

B, K, D, H, W = 2, 3, 5, 8, 12  # pairwise distinct
TINY_ENCODER = {"channels": [4, 6], "kernel_sizes": [3, 3], "strides": [1, 2]}  # 4×6 tokens
TINY_DECODER = {
    "broadcast": {"init_size": [2, 3], "channels": [6, 5, 4], "kernel_size": 3},
    "broadcast-mlp": {"hidden": [6]},
    "noa": {"init_size": [2, 3], "slot_channels": [6], "feature_dim": 4, "channels": [6, 5, 4]},
    "transformer": {"patch_size": 4, "dim": 6, "depth": 1, "heads": 2, "mlp_ratio": 2},
}


def tiny_config(**overrides) -> ModelConfig:
    preset = overrides.pop("preset", "PSA")
    decoder = overrides.pop("decoder", None)
    from probslot.models import get_preset

    name = decoder or get_preset(preset).decoder
    grouping = overrides.get("grouping") or get_preset(preset).grouping
    fields = dict(
        preset=preset,
        decoder=decoder,
        image_size=[H, W],
        num_slots=K,
        slot_dim=D,
        iters=2,
        encoder_kwargs=dict(TINY_ENCODER),
        decoder_kwargs=dict(TINY_DECODER[name]),
    )
    if grouping == "ae":  # the AE baseline pools a square token grid: H × H images (4×4 tokens)
        fields["image_size"] = [H, H]
        if "init_size" in fields["decoder_kwargs"]:
            fields["decoder_kwargs"]["init_size"] = [2, 2]
    fields.update(overrides)
    return ModelConfig(**fields)


def check_forward_backward(model: SlotAutoencoder, keep=None):
    h, w = model.image_size
    images = torch.rand(B, 3, h, w)
    out = model(images, keep=keep)
    assert isinstance(out, AutoencoderOutput)
    assert out.recon.shape == (B, 3, h, w)
    assert out.attn_masks.shape == (B, K, h, w)
    assert (out.attn_masks >= 0).all()
    # PSA forms A = exp(log_joint − logsumexp) in float32; with large log-densities the sums
    # drift from 1 by up to ~1e-3 (reported to the probslot.nn owner; softmax would be exact).
    torch.testing.assert_close(out.attn_masks.sum(1), torch.ones(B, h, w), atol=2e-3, rtol=0)
    assert out.slots.shape == (B, K, D)
    if out.masks is not None:
        assert out.masks.shape == (B, K, 1, h, w)
        torch.testing.assert_close(out.masks.sum(1), torch.ones(B, 1, h, w))
        assert out.per_slot.shape == (B, K, 3, h, w)
    loss = model.loss(images, out)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient for {name}"
    return out


@pytest.mark.parametrize("grouping", GROUPINGS.available())
def test_every_grouping_in_a_model(grouping):
    model = build_model(
        tiny_config(preset=None, encoder="cnn", grouping=grouping, decoder="broadcast")
    )
    out = check_forward_backward(model)
    expected = SlotAttentionOutput if grouping in ("sa", "ae") else SlotPosterior
    assert isinstance(out.grouping, expected)


@pytest.mark.parametrize(
    ("grouping", "options"),
    [
        ("psa", {"query_proj": False, "variance": "map"}),  # the authors' base PSA (notes §11.2)
        ("psa", {"init": "standard"}),  # paper Eq. 3 init, no parameters
        ("psa-proj", {"gru": True, "mlp": True, "norm_slots": True}),  # the authors' PSA-Proj
    ],
)
def test_grouping_options_reach_the_model(grouping, options):
    cfg = tiny_config(preset=None, encoder="cnn", grouping=grouping, decoder="broadcast")
    model = build_model(dataclasses.replace(cfg, grouping_kwargs=options))
    check_forward_backward(model)


@pytest.mark.parametrize("decoder", DECODERS.available())
def test_every_decoder_in_a_model(decoder):
    model = build_model(tiny_config(preset="PSA-Proj", decoder=decoder))
    assert model.additive == (decoder in ("broadcast", "broadcast-mlp"))
    check_forward_backward(model)


@pytest.mark.parametrize("preset", available_presets())
@pytest.mark.parametrize("pruned", [False, True])
def test_every_preset_forward_backward(preset, pruned):
    keep = torch.tensor([[True, False, True], [False, True, True]]) if pruned else None
    out = check_forward_backward(build_model(tiny_config(preset=preset)), keep=keep)
    if pruned and out.masks is not None:
        assert (out.masks[~keep] == 0).all() and (out.per_slot[~keep] == 0).all()


def test_psa_output_carries_the_mixture():
    model = build_model(tiny_config(preset="PSA"))
    post = model.encode(torch.rand(B, 3, H, W))
    assert isinstance(post, SlotPosterior)
    assert post.mu.shape == post.var.shape == (B, K, D)
    torch.testing.assert_close(post.pi.sum(-1), torch.ones(B), atol=1e-3, rtol=0)
    assert post.attn.shape == (B, K, 4 * 6)
    assert model.token_grid == (4, 6)


def test_outputs_are_in_unit_image_space():
    """recon = (decoder output + 1) / 2 and the likelihood sees both images in [−1, 1]."""
    model = build_model(tiny_config(preset="PSA-Proj"))  # MSE likelihood
    images = torch.rand(B, 3, H, W)
    out = model(images)
    raw = model.decoder(out.slots)
    torch.testing.assert_close(out.recon, (raw.recon + 1) / 2)
    torch.testing.assert_close(out.per_slot, (raw.per_slot + 1) / 2)
    torch.testing.assert_close(model.decode(out.slots).recon, out.recon)
    expected = ((raw.recon - (2 * images - 1)) ** 2).mean()
    torch.testing.assert_close(model.loss(images, out), expected)


def test_encoder_sees_images_mapped_to_minus_one_one(monkeypatch):
    model = build_model(tiny_config())
    seen = []
    inner = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda x: seen.append(x) or inner(x))
    images = torch.rand(B, 3, H, W)
    model(images)
    torch.testing.assert_close(seen[0], images * 2 - 1)


def test_attention_masks_are_the_attention_on_the_token_grid():
    model = build_model(tiny_config())
    attn = torch.softmax(torch.randn(B, K, 4 * 6), dim=1)
    full = model.attention_masks(attn, (4, 6))
    assert full.shape == (B, K, H, W)
    torch.testing.assert_close(full.sum(1), torch.ones(B, H, W))
    # Dense reference: bilinear with half-pixel centres, y = (i + 0.5)·h/H − 0.5, edges clamped.
    grid = attn.reshape(B, K, 4, 6).double()

    def axis(i, size, out):
        y = min(max((i + 0.5) * size / out - 0.5, 0.0), size - 1)
        lo = int(y)
        hi = min(lo + 1, size - 1)
        return lo, hi, y - lo

    ref = torch.empty(B, K, H, W, dtype=torch.float64)
    for i in range(H):
        y0, y1, fy = axis(i, 4, H)
        for j in range(W):
            x0, x1, fx = axis(j, 6, W)
            top = (1 - fx) * grid[..., y0, x0] + fx * grid[..., y0, x1]
            bottom = (1 - fx) * grid[..., y1, x0] + fx * grid[..., y1, x1]
            ref[..., i, j] = (1 - fy) * top + fy * bottom
    torch.testing.assert_close(full.double(), ref, atol=1e-6, rtol=0)
    # Same size grid → exactly the attention.
    same = build_model(
        tiny_config(encoder_kwargs={"channels": [4], "kernel_sizes": [3], "strides": [1]})
    )
    attn_full = torch.softmax(torch.randn(B, K, H * W), dim=1)
    torch.testing.assert_close(same.attention_masks(attn_full, (H, W)), attn_full.view(B, K, H, W))


def test_num_slots_can_change_per_call():
    model = build_model(tiny_config())
    out = model(torch.rand(B, 3, H, W), num_slots=K + 4)
    assert out.masks.shape[1] == out.attn_masks.shape[1] == K + 4


def test_determinism_under_fixed_seed():
    def run():
        torch.manual_seed(123)
        model = build_model(tiny_config(preset="SA"))
        images = torch.rand(B, 3, H, W)
        torch.manual_seed(7)
        out = model(images)
        return out.recon, model.loss(images, out)

    (r1, l1), (r2, l2) = run(), run()
    assert torch.equal(r1, r2) and torch.equal(l1, l2)


def test_state_dict_round_trip_reproduces_outputs():
    """What `load_model` relies on: a fresh build + load_state_dict gives the same outputs."""
    torch.manual_seed(0)
    model = build_model(tiny_config(preset="PSA"))
    images = torch.linspace(0, 1, B * 3 * H * W).view(B, 3, H, W)
    torch.manual_seed(1)
    out = model(images)
    assert torch.isfinite(out.recon).all()
    value = out.recon.mean().item()
    torch.manual_seed(0)
    model2 = build_model(tiny_config(preset="PSA"))
    model2.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    assert model2(images).recon.mean().item() == value


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (
            torch.rand(B, 1, H, W),
            ValueError,
            r"\(batch, 3, 8, 12\) \(3 RGB channels.*got shape \(2, 1, 8, 12\)",
        ),
        (torch.rand(B, 3, W, H), ValueError, r"got shape \(2, 3, 12, 8\)"),
        (torch.rand(3, H, W), ValueError, r"got shape \(3, 8, 12\)"),
        (
            torch.zeros(B, 3, H, W, dtype=torch.uint8),
            TypeError,
            r"got dtype torch.uint8 .*images.float\(\) / 255",
        ),
        ([[0.0]], TypeError, "got list"),
    ],
)
def test_bad_images_are_rejected_before_any_work(images, error, message, monkeypatch):
    model = build_model(tiny_config())
    monkeypatch.setattr(model.encoder, "forward", lambda x: pytest.fail("encoder ran"))
    with pytest.raises(error, match=message):
        model(images)
    with pytest.raises(error, match=message):
        model.encode(images)


def test_bad_keep_and_num_slots(monkeypatch):
    model = build_model(tiny_config())
    monkeypatch.setattr(model.encoder, "forward", lambda x: pytest.fail("encoder ran"))
    images = torch.rand(B, 3, H, W)
    with pytest.raises(ValueError, match=r"keep must have shape \(batch, slots\) = \(2, 3\)"):
        model(images, keep=torch.ones(B, K + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"keep must have shape \(batch, slots\) = \(2, 7\)"):
        model(images, num_slots=7, keep=torch.ones(B, K, dtype=torch.bool))
    with pytest.raises(ValueError, match="num_slots must be an integer >= 1; got 0"):
        model(images, num_slots=0)


def test_loss_checks_its_inputs():
    model = build_model(tiny_config())
    images = torch.rand(B, 3, H, W)
    out = model(images)
    with pytest.raises(ValueError, match=r"out.recon has shape \(1, 3, 8, 12\)"):
        model.loss(images, dataclasses.replace(out, recon=out.recon[:1]))


def test_mismatched_components_are_rejected():
    cfg = tiny_config(preset="PSA-Proj")
    a = build_model(cfg)
    b = build_model(dataclasses.replace(cfg, slot_dim=D + 2))
    with pytest.raises(
        ValueError, match=r"decoder expects slots of size 7 but the grouping gives slot_dim=5"
    ):
        SlotAutoencoder(a.encoder, a.grouping, b.decoder, num_slots=K)
    with pytest.raises(ValueError, match="num_slots must be an integer >= 1; got 0"):
        SlotAutoencoder(a.encoder, a.grouping, a.decoder, num_slots=0)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["PSA", "SA"])
def test_a_few_steps_of_training_reduce_the_loss(preset):
    """End-to-end: 60 Adam steps on one fixed batch of blobs lower the likelihood loss."""
    torch.manual_seed(0)
    model = build_model(tiny_config(preset=preset, likelihood="mse"))
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    images = torch.zeros(B, 3, H, W)
    images[0, 0] = ((yy - 3) ** 2 + (xx - 3) ** 2 < 6).float()
    images[1, 2] = ((yy - 5) ** 2 + (xx - 8) ** 2 < 6).float()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = model.loss(images, model(images))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
