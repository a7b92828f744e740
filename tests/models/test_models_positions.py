"""Positions in the mixture (`coord_dims=2`): encoder, PSA and decoders together and alone."""

import math

import pytest
import torch

from grouping_helpers import flat_psa  # noqa: E402
from probslot.decoders import DECODERS
from probslot.encoders import CNNEncoder
from probslot.layers import cell_centres
from probslot.models import ModelConfig, build_model

B, H, W = 2, 12, 20  # distinct, so swapped axes fail


def test_cell_centres_are_the_centres_of_the_cells_in_minus_one_one():
    c = cell_centres(2, 4)
    # row-major (y, x); a 2-cell axis has centres ±1/2, a 4-cell axis ±1/4 and ±3/4
    torch.testing.assert_close(c[:4, 0], torch.full((4,), -0.5))
    torch.testing.assert_close(c[:4, 1], torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(c[4:, 0], torch.full((4,), 0.5))
    # a coarse grid's cell centre is the mean of the fine cells it covers (grids share one frame)
    fine = cell_centres(4, 8).reshape(2, 2, 4, 2, 2).mean(dim=(1, 3))  # (2, 4, 2)
    torch.testing.assert_close(fine.reshape(8, 2), c)


def test_encoder_appends_the_token_centres_and_drops_the_position_embedding():
    enc = CNNEncoder(channels=[4, 6], kernel_sizes=[3, 3], strides=[1, 2], out_dim=7, coord_dims=2)
    out = enc(torch.rand(B, 3, H, W) * 2 - 1)
    h, w = out.grid
    assert out.tokens.shape == (B, h * w, 7)
    torch.testing.assert_close(out.tokens[0, :, -2:], cell_centres(h, w))
    torch.testing.assert_close(out.tokens[1, :, -2:], cell_centres(h, w))
    assert not any("pos" in name for name, _ in enc.named_parameters())


def test_encoder_features_are_translation_equivariant_without_the_position_embedding():
    enc = CNNEncoder(channels=[4, 6], kernel_sizes=[3, 3], strides=[1, 1], out_dim=7, coord_dims=2)
    x = torch.zeros(1, 3, H, W)
    x[:, :, 3:6, 4:8] = torch.rand(1, 3, 3, 4)
    moved = torch.roll(x, shifts=(2, 5), dims=(2, 3))  # a translation: the patch stays inside
    with torch.no_grad():
        a = enc(x).tokens[0, :, :-2].reshape(H, W, 5)
        b = enc(moved).tokens[0, :, :-2].reshape(H, W, 5)
    r = 2  # receptive-field radius of two 3×3 convolutions: the zero padding reaches this far
    torch.testing.assert_close(b[2 + r : H - r, 5 + r : W - r], a[r : H - 2 - r, r : W - 5 - r])
    # with the position embedding (coord_dims=0) the same check fails: features know where they are
    enc0 = CNNEncoder(channels=[4, 6], kernel_sizes=[3, 3], strides=[1, 1], out_dim=7)
    with torch.no_grad():
        a0 = enc0(x).tokens[0].reshape(H, W, 7)
        b0 = enc0(moved).tokens[0].reshape(H, W, 7)
    assert not torch.allclose(b0[2 + r : H - r, 5 + r : W - r], a0[r : H - 2 - r, r : W - 5 - r])


def test_psa_slot_positions_are_the_responsibility_weighted_centres():
    """μ's last two entries: Σ_n Â_kn c_n; σ²'s: Σ_n Â_kn (c_n − μ)² (dense reference)."""
    torch.manual_seed(0)
    n_side = 6
    coords = cell_centres(n_side, n_side).double()  # (36, 2)
    feats = torch.randn(B, n_side * n_side, 5, dtype=torch.float64)
    tokens = torch.cat([feats, coords.expand(B, -1, -1)], dim=-1)
    for standardize in (False, True):
        m = flat_psa(
            3, 7, iters=3, variant="base", coord_dims=2, standardize=standardize, min_var=1e-9
        ).double()
        with torch.no_grad():
            post = m(tokens)
        a_hat = post.attn / post.attn.sum(-1, keepdim=True)  # (b, k, n)
        centre = a_hat @ coords  # (b, k, 2)
        spread = torch.einsum("bkn,bknc->bkc", a_hat, (coords - centre[:, :, None]).square())
        torch.testing.assert_close(post.mu[..., -2:], centre)
        torch.testing.assert_close(post.var[..., -2:], spread)


def test_psa_positions_skip_the_layernorm():
    """Scaling the positions changes the E-step (they are features of the mixture), but the
    appearance part is still LayerNormed: scaling the appearance features changes nothing."""
    torch.manual_seed(1)
    coords = cell_centres(5, 5)
    feats = torch.randn(1, 25, 4)
    m = flat_psa(3, 6, iters=2, variant="base", coord_dims=2)
    with torch.no_grad():
        torch.manual_seed(3)
        a = m(torch.cat([feats, coords[None]], -1)).attn
        torch.manual_seed(3)
        b = m(torch.cat([7.0 * feats, coords[None]], -1)).attn
        torch.manual_seed(3)
        c = m(torch.cat([feats, 7.0 * coords[None]], -1)).attn
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # up to LayerNorm's eps
    assert (a - c).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"coord_dims": 2, "variant": "proj"}, "coord_dims=2 needs the base 'psa' grouping"),
        ({"coord_dims": -1}, "coord_dims must be an integer >= 1; got -1"),
        ({"coord_dims": 7}, "smaller than dim=7"),
    ],
)
def test_psa_coord_dims_errors(kwargs, message):
    options = {"variant": "base", **kwargs}
    with pytest.raises(ValueError, match=message):
        flat_psa(3, 7, **options)


DECODER_OPTIONS = {
    "broadcast": {"init_size": [3, 5], "channels": [6, 5, 4], "kernel_size": 3},
    "broadcast-mlp": {"hidden": [8, 6]},
}


@pytest.mark.parametrize("name", sorted(DECODER_OPTIONS))
def test_decoder_draws_each_slot_around_its_centre(name):
    """Moving a slot's centre by a whole number of cells of the first grid moves its RGB and alpha
    by as many pixels (exactly, away from the zero-padded borders)."""
    torch.manual_seed(0)
    dec = DECODERS.build(name, slot_dim=6, image_size=(H, W), coord_dims=2, **DECODER_OPTIONS[name])
    first = (3, 5) if name == "broadcast" else (H, W)  # grid the position code lives on
    step_y, step_x = 2.0 / first[0], 2.0 / first[1]  # one cell in [−1, 1] coordinates
    pix_y, pix_x = H // first[0], W // first[1]  # pixels per cell
    slot = torch.randn(1, 6)
    slot[:, -2:] = torch.tensor([-0.2, -0.3])
    moved = slot.clone()
    moved[:, -2:] += torch.tensor([step_y, step_x])
    with torch.no_grad():
        a = dec.decode_each(slot)  # (1, 4, H, W)
        b = dec.decode_each(moved)
    margin = 4 if name == "broadcast" else 0  # receptive field of the conv stack
    ys = slice(margin, H - pix_y - margin)
    xs = slice(margin, W - pix_x - margin)
    shifted = b[:, :, pix_y:, pix_x:][:, :, ys, xs]
    torch.testing.assert_close(shifted, a[:, :, ys, xs], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(DECODER_OPTIONS))
def test_decoder_coord_dims_errors(name):
    with pytest.raises(ValueError, match="coord_dims must be 0"):
        DECODERS.build(name, slot_dim=6, image_size=(H, W), coord_dims=3, **DECODER_OPTIONS[name])
    with pytest.raises(ValueError, match="slot_dim must exceed"):
        DECODERS.build(name, slot_dim=2, image_size=(H, W), coord_dims=2, **DECODER_OPTIONS[name])


def test_encoder_coord_dims_errors():
    with pytest.raises(ValueError, match="coord_dims must be 0"):
        CNNEncoder(channels=[4], kernel_sizes=[3], strides=[1], out_dim=7, coord_dims=1)
    with pytest.raises(ValueError, match="out_dim must exceed"):
        CNNEncoder(channels=[4], kernel_sizes=[3], strides=[1], out_dim=2, coord_dims=2)


def _model_config(encoder: int, grouping: int, decoder: int, **grouping_kwargs) -> ModelConfig:
    """A tiny PSA model config with the given coord_dims of its three parts."""
    return ModelConfig(
        preset="PSA",
        image_size=[H, W],
        num_slots=3,
        slot_dim=8,
        encoder_kwargs={
            "channels": [4, 6],
            "kernel_sizes": [3, 3],
            "strides": [1, 2],
            "coord_dims": encoder,
        },
        grouping_kwargs={"coord_dims": grouping, **grouping_kwargs},
        decoder_kwargs={"init_size": [3, 5], "channels": [6, 5, 4], "coord_dims": decoder},
    )


def test_model_with_positions_in_the_mixture_trains_end_to_end():
    cfg = _model_config(2, 2, 2, standardize=True)
    model = build_model(cfg)
    images = torch.rand(B, 3, H, W)
    out = model(images)
    # the slots carry their centres: the attention-weighted token centres of the grid
    attn = out.grouping.attn
    centres = (attn / attn.sum(-1, keepdim=True)) @ cell_centres(*model.token_grid)
    torch.testing.assert_close(out.grouping.mu[..., -2:], centres, atol=1e-5, rtol=1e-5)
    model.loss(images, out).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize(
    ("encoder", "grouping", "decoder"), [(2, 0, 0), (0, 2, 0), (0, 0, 2), (2, 0, 2)]
)
def test_model_rejects_mismatched_coord_dims(encoder, grouping, decoder):
    cfg = _model_config(encoder, grouping, decoder)
    with pytest.raises(ValueError, match="same coord_dims"):
        build_model(cfg)


def test_psa_positions_out_of_the_estep_group_by_appearance_and_still_give_centres():
    torch.manual_seed(4)
    coords = cell_centres(6, 6)
    feats = torch.randn(B, 36, 5)
    m = flat_psa(3, 7, iters=3, variant="base", coord_dims=2, coord_weight=0.0, standardize=True)
    with torch.no_grad():
        torch.manual_seed(5)
        post = m(torch.cat([feats, coords.expand(B, -1, -1)], -1))
        torch.manual_seed(5)
        moved = m(torch.cat([feats, coords.flip(0).expand(B, -1, -1)], -1))  # other positions
    torch.testing.assert_close(post.attn, moved.attn)  # the E-step never saw the positions
    a_hat = post.attn / post.attn.sum(-1, keepdim=True)
    torch.testing.assert_close(post.mu[..., -2:], a_hat @ coords, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(moved.mu[..., -2:], a_hat @ coords.flip(0), atol=1e-5, rtol=1e-5)
    # with positions in the E-step the same swap changes the grouping
    m.coord_weight = 1.0
    with torch.no_grad():
        torch.manual_seed(5)
        a = m(torch.cat([feats, coords.expand(B, -1, -1)], -1)).attn
        torch.manual_seed(5)
        b = m(torch.cat([feats, coords.flip(0).expand(B, -1, -1)], -1)).attn
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_psa_coord_weight_is_a_power_likelihood_on_the_positions(weight):
    """E-step responsibilities against a dense formula written here:
    A_nk ∝ [π_k N(app_n; μ_k, σ_k²) N(pos_n; μ_k, σ_k²)^w]^{1/T}."""
    torch.manual_seed(6)
    n, d_app, k, temp = 25, 4, 3, 1.7
    coords = cell_centres(5, 5)  # (n, 2)
    tokens = torch.cat([torch.randn(B, n, d_app), coords.expand(B, -1, -1)], -1).double()
    m = flat_psa(
        k,
        d_app + 2,
        iters=1,
        variant="base",
        coord_dims=2,
        coord_weight=weight,
        query_proj=False,
        init="standard",
        temperature=temp,
    ).double()
    mu0 = torch.randn(B, k, d_app + 2, dtype=torch.float64)
    var0 = torch.rand(B, k, d_app + 2, dtype=torch.float64) + 0.2
    log_pi0 = torch.log_softmax(torch.randn(B, k, dtype=torch.float64), -1)
    m.initial_state = lambda *args: (mu0, var0, log_pi0)
    with torch.no_grad():
        attn = m(tokens).attn  # (B, k, n)

    z = torch.cat([m.norm_inputs(tokens[..., :-2]), tokens[..., -2:]], -1)  # what EM sees
    # per-feature Gaussian log densities (B, k, n, D), then the weighted sum over features
    log_n = -0.5 * (
        (z[:, None] - mu0[:, :, None]).square() / var0[:, :, None]
        + var0[:, :, None].log()
        + math.log(2 * math.pi)
    )
    per_feature = torch.tensor([1.0] * d_app + [weight] * 2, dtype=torch.float64)
    logits = (log_pi0[..., None] + (log_n * per_feature).sum(-1)) / temp
    torch.testing.assert_close(attn, torch.softmax(logits, dim=1), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize(
    ("bad", "error"), [(-0.1, ValueError), (1.5, ValueError), (True, TypeError), ("0.5", TypeError)]
)
def test_psa_rejects_coord_weight_outside_unit_interval(bad, error):
    with pytest.raises(error, match="coord_weight must be a number >= 0 and <= 1"):
        flat_psa(3, 7, variant="base", coord_dims=2, coord_weight=bad)
    with pytest.raises(error, match="coord_weight must be a number >= 0 and <= 1"):
        flat_psa(3, 7, variant="base", coord_weight=bad)  # checked without positions too


def test_replicate_padding_keeps_a_plain_background_plain_up_to_the_border():
    torch.manual_seed(7)
    plain = torch.full((1, 3, 16, 16), -1.0)  # a black image, normalised
    kwargs = dict(channels=(6, 6), kernel_sizes=(5, 3), strides=(2, 1), out_dim=9, coord_dims=2)
    replicate = CNNEncoder(**kwargs, padding_mode="replicate")
    zeros = CNNEncoder(**kwargs)
    zeros.load_state_dict(replicate.state_dict())  # same weights, only the padding differs
    with torch.no_grad():
        feats = replicate(plain).tokens[0, :, :-2]  # (n, 7) appearance features
        feats_zeros = zeros(plain).tokens[0, :, :-2]
    torch.testing.assert_close(feats, feats[:1].expand_as(feats))  # every token alike
    assert (feats_zeros - feats_zeros.mean(0)).abs().max() > 1e-2  # zeros: the border differs


def test_encoder_rejects_unknown_padding_mode():
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        CNNEncoder(channels=(4,), kernel_sizes=(3,), strides=(1,), padding_mode="edge")
