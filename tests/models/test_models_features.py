"""Feature reconstruction (DINOSAUR): feature decoders, FeatureAutoencoder, ModelConfig target."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from probslot.decoders import FEATURE_DECODERS
from probslot.models import FeatureAutoencoder, ModelConfig, build_model
from probslot.typing import FeatureAutoencoderOutput, FeatureDecoderOutput

B, K, S, GRID, D = 2, 5, 6, (3, 4), 7  # batch, slots, slot dim, token grid, feature dim
N = GRID[0] * GRID[1]
TINY = {
    "feature-mlp": {"hidden": [16, 8]},
    "feature-transformer": {"dim": 8, "depth": 2, "heads": 2, "mlp_ratio": 2},
}
KEEP = torch.tensor([[1, 0, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
VIT = {
    "weights": "random",
    "patch_size": 4,
    "embed_dim": 12,
    "depth": 1,
    "num_heads": 2,
    "pos_grid": 4,
}


def build(name):
    return FEATURE_DECODERS.build(name, slot_dim=S, grid=GRID, feature_dim=D, **TINY[name])


def decode(dec, slots, keep=None, targets=None):
    if dec.autoregressive:
        return dec(slots, keep=keep, targets=targets)
    return dec(slots, keep=keep)


def test_every_feature_decoder_has_tiny_settings():
    assert sorted(TINY) == FEATURE_DECODERS.available()


@pytest.mark.parametrize("keep", [None, KEEP], ids=["all", "pruned"])
@pytest.mark.parametrize("name", FEATURE_DECODERS.available())
def test_feature_decoder_forward_backward_every_parameter_gets_gradient(name, keep):
    dec = build(name)
    slots = torch.randn(B, K, S, requires_grad=True)
    out = decode(dec, slots, keep, targets=torch.randn(B, N, D))
    assert isinstance(out, FeatureDecoderOutput)
    assert out.recon.shape == (B, N, D) and torch.isfinite(out.recon).all()
    assert out.masks.shape == (B, K, N) and (out.masks >= 0).all()
    torch.testing.assert_close(out.masks.sum(1), torch.ones(B, N))
    if dec.additive:
        torch.testing.assert_close((out.masks[..., None] * out.per_slot).sum(1), out.recon)
    else:
        assert out.per_slot is None
    if keep is not None:
        assert (out.masks[~keep] == 0).all()
    out.recon.pow(2).mean().backward()
    for pname, p in dec.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {pname}"
    if keep is not None:  # a pruned slot cannot influence the tokens
        assert (slots.grad[~keep] == 0).all() and (slots.grad[keep].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("name", FEATURE_DECODERS.available())
def test_keep_equals_decoding_only_the_kept_slots(name):
    dec = build(name).eval()
    slots, targets = torch.randn(B, K, S), torch.randn(B, N, D)
    with torch.no_grad():
        out = decode(dec, slots, KEEP, targets)
        for i in range(B):
            alone = decode(dec, slots[i : i + 1, KEEP[i]], None, targets[i : i + 1])
            torch.testing.assert_close(out.recon[i], alone.recon[0], atol=1e-5, rtol=1e-4)


def test_mlp_decoder_matches_a_per_slot_per_token_reference():
    """x̂_kt, α_kt = MLP(s_k + p_t); m = softmax_k α; x̂_t = Σ_k m_kt x̂_kt (DINOSAUR)."""
    dec = build("feature-mlp")
    slots = torch.randn(B, K, S)
    out = dec(slots)
    recon = torch.zeros(B, N, D)
    logits = torch.zeros(B, K, N)
    per = torch.zeros(B, K, N, D)
    for b in range(B):
        for k in range(K):
            for t in range(N):
                y = dec.mlp(slots[b, k] + dec.pos[t])
                per[b, k, t], logits[b, k, t] = y[:D], y[D]
    masks = logits.softmax(1)
    for t in range(N):
        recon[:, t] = (masks[:, :, t, None] * per[:, :, t]).sum(1)
    torch.testing.assert_close(out.masks, masks, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.recon, recon, atol=1e-6, rtol=1e-5)


def test_autoregressive_decoder_is_causal_and_teacher_forced():
    """Prediction t sees targets < t only: changing target j moves predictions j+1… alone."""
    dec = build("feature-transformer").eval()
    slots, targets = torch.randn(B, K, S), torch.randn(B, N, D)
    with torch.no_grad():
        base = dec(slots, targets=targets).recon
        j = 5
        moved = targets.clone()
        moved[:, j] = torch.randn(B, D)  # (a constant shift would vanish in the input LayerNorm)
        out = dec(slots, targets=moved).recon
    torch.testing.assert_close(out[:, : j + 1], base[:, : j + 1], rtol=0, atol=1e-6)
    assert (out[:, j + 1 :] - base[:, j + 1 :]).abs().amax(-1).min() > 1e-4


def test_autoregressive_generation_is_the_fixed_point_of_teacher_forcing():
    dec = build("feature-transformer").eval()
    slots = torch.randn(B, K, S)
    with torch.no_grad():
        generated = dec(slots).recon
        forced = dec(slots, targets=generated).recon
    torch.testing.assert_close(forced, generated, atol=1e-5, rtol=1e-4)


def test_feature_decoder_errors():
    with pytest.raises(ValueError, match=r"targets must be the encoder's tokens \(batch, 12, 7\)"):
        build("feature-transformer")(torch.randn(B, K, S), targets=torch.randn(B, 11, D))
    with pytest.raises(ValueError, match=r"dim \(8\) must be divisible by heads \(3\)"):
        FEATURE_DECODERS.build(
            "feature-transformer", slot_dim=S, grid=GRID, feature_dim=D, dim=8, heads=3
        )
    with pytest.raises(
        ValueError, match=r"unknown feature decoder 'feature-mpl'\. Did you mean 'feature-mlp'"
    ):
        FEATURE_DECODERS.get("feature-mpl")


# --------------------------------------------------------------------------- the model
def feature_config(**changes) -> ModelConfig:
    base = dict(
        preset=None, encoder="vit", grouping="psa", decoder="feature-mlp", target="features",
        encoder_kwargs=VIT, decoder_kwargs={"hidden": [16]}, image_size=[12, 16], num_slots=3,
        slot_dim=8, token_mlp=10,
    )  # fmt: skip
    return ModelConfig(**{**base, **changes})


@pytest.mark.parametrize(
    ("grouping", "decoder"),
    [("psa", "feature-mlp"), ("sa", "feature-mlp"), ("psa-proj", "feature-transformer")],
)
def test_feature_model_reconstructs_the_frozen_encoders_tokens(grouping, decoder):
    kwargs = TINY[decoder] if decoder == "feature-transformer" else {"hidden": [16]}
    model = build_model(feature_config(grouping=grouping, decoder=decoder, decoder_kwargs=kwargs))
    assert isinstance(model, FeatureAutoencoder) and model.token_grid == (3, 4)
    images = torch.rand(B, 3, 12, 16)
    out = model(images)
    assert isinstance(out, FeatureAutoencoderOutput)
    with torch.no_grad():
        expected = model.encoder(images * 2 - 1).tokens
    torch.testing.assert_close(out.target, expected, rtol=0, atol=0)
    assert out.recon.shape == out.target.shape == (B, 12, 12)
    assert out.masks.shape == (B, 3, 1, 12, 16) and out.attn_masks.shape == (B, 3, 12, 16)
    torch.testing.assert_close(out.masks.sum(1), torch.ones(B, 1, 12, 16))
    loss = model.loss(images, out)
    torch.testing.assert_close(loss, (out.recon - expected).pow(2).mean())
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("encoder."):
            assert p.grad is None, f"the frozen encoder got a gradient in {name}"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient for {name}"


def test_cached_features_replace_the_encoder_exactly(monkeypatch):
    model = build_model(feature_config())
    images = torch.rand(B, 3, 12, 16)
    torch.manual_seed(1)
    direct = model(images)
    calls = []
    monkeypatch.setattr(model.encoder, "forward", lambda x: calls.append(x))
    torch.manual_seed(1)
    cached = model(images, features=direct.target.clone())
    assert not calls, "the encoder ran although features were given"
    torch.testing.assert_close(cached.recon, direct.recon, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"features must be the encoder's tokens \(batch, h·w, D\) = "
                       r"\(2, 12, 12\); got \(2, 12, 11\)"):  # fmt: skip
        model(images, features=torch.zeros(B, 12, 11))


def test_feature_model_needs_a_frozen_encoder():
    with pytest.raises(
        ValueError, match=r"needs a frozen encoder .* Set encoder_kwargs\.freeze: true"
    ):
        build_model(feature_config(encoder_kwargs={**VIT, "freeze": False}))


def test_feature_config_round_trips_and_resolves_to_mse():
    cfg = feature_config()
    assert ModelConfig(**dataclasses.asdict(cfg)) == cfg
    assert cfg.resolve().likelihood == "mse" and cfg.resolve().target == "features"
    pixels = ModelConfig(preset="PSA")
    assert pixels.target == "pixels" and pixels.token_mlp is None


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            {"decoder": "broadcast"},
            r"decoder 'broadcast' reconstructs images but ModelConfig\.target "
            r"is 'features'; set target: pixels or a decoder of feature-mlp",
        ),
        (
            {"target": "pixels", "token_mlp": None},
            r"decoder 'feature-mlp' reconstructs the encoder's "
            r"features but ModelConfig\.target is 'pixels'",
        ),
        ({"preset": "PSA", "decoder": None}, r"target: features needs a feature decoder"),
        ({"likelihood": "dgauss"}, r"scored by the mean squared error; got likelihood 'dgauss'"),
        ({"target": "image"}, r"ModelConfig\.target must be one of \['pixels', 'features'\]"),
        (
            {"decoder_kwargs": {"grid": [3, 4]}},
            r"must not set 'grid' \(it is the encoder's token grid",
        ),
        (
            {"decoder_kwargs": {"hiden": [4]}},
            r"unknown option 'hiden' for decoder 'feature-mlp'.*'hidden'",
        ),
    ],
)
def test_feature_config_errors_name_the_fix(changes, match):
    with pytest.raises(ValueError, match=match):
        feature_config(**changes)


def test_token_mlp_needs_the_feature_target():
    with pytest.raises(ValueError, match=r"token_mlp .* needs target: features"):
        ModelConfig(preset="PSA", token_mlp=16)


def test_image_size_not_divisible_by_patch_fails_at_build():
    with pytest.raises(
        ValueError, match=r"image size \(13, 16\) is not divisible by the patch size 4"
    ):
        build_model(feature_config(image_size=[13, 16]))
