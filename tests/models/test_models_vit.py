"""DINO / DINOv2 ViT encoders: published key layout, a dense reference forward, frozen use, errors.

The fixtures are tiny ViTs whose state dicts the tests write key by key in the published layout
(``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.norm1/attn.qkv/attn.proj/norm2/
mlp.fc1/mlp.fc2``, ``norm``; DINOv2 adds ``mask_token``, ``blocks.N.ls1.gamma/ls2.gamma`` and
optionally ``register_tokens``), so the loader is held to the layout, not to its own module.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from probslot.encoders import ENCODERS, VIT_ARCHS
from probslot.encoders.vit import IMAGENET_MEAN, IMAGENET_STD, find_weights, published_shapes

D, HEADS, DEPTH, P, M = 12, 3, 2, 4, 5  # embed dim, heads, blocks, patch, position grid side
TINY = {"embed_dim": D, "num_heads": HEADS, "depth": DEPTH, "patch_size": P, "pos_grid": M}


def published_state(v2: bool = False, registers: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random checkpoint written key by key in the published layout (not from our module)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state = {"cls_token": r(1, 1, D), "pos_embed": r(1, 1 + M * M, D)}
    if v2:
        state["mask_token"] = r(1, D)
    if registers:
        state["register_tokens"] = r(1, registers, D)
    state["patch_embed.proj.weight"] = r(D, 3, P, P)
    state["patch_embed.proj.bias"] = r(D)
    for i in range(DEPTH):
        pre = f"blocks.{i}."
        state |= {pre + "norm1.weight": 1 + r(D), pre + "norm1.bias": r(D)}
        state |= {pre + "attn.qkv.weight": r(3 * D, D), pre + "attn.qkv.bias": r(3 * D)}
        state |= {pre + "attn.proj.weight": r(D, D), pre + "attn.proj.bias": r(D)}
        state |= {pre + "norm2.weight": 1 + r(D), pre + "norm2.bias": r(D)}
        state |= {pre + "mlp.fc1.weight": r(4 * D, D), pre + "mlp.fc1.bias": r(4 * D)}
        state |= {pre + "mlp.fc2.weight": r(D, 4 * D), pre + "mlp.fc2.bias": r(D)}
        if v2:
            state |= {pre + "ls1.gamma": r(D), pre + "ls2.gamma": r(D)}
    return state | {"norm.weight": 1 + r(D), "norm.bias": r(D)}


def reference_tokens(
    state: dict[str, torch.Tensor],
    images01: torch.Tensor,
    layers: int = DEPTH,
    norm: bool = False,
    registers: int = 0,
    offset: float = 0.1,
) -> torch.Tensor:
    """The DINO/DINOv2 forward written out densely from the raw state dict (the authors' code)."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    x = (images01 - mean) / std
    b = x.shape[0]
    x = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=P)
    h, w = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["cls_token"].expand(b, -1, -1), x], 1)
    pos = state["pos_embed"]
    if (h, w) != (M, M):  # facebookresearch/dino vision_transformer.interpolate_pos_encoding
        grid = pos[:, 1:].reshape(1, M, M, D).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, scale_factor=((h + offset) / M, (w + offset) / M), mode="bicubic"
        )
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, D)], 1)
    x = x + pos
    if registers:
        x = torch.cat([x[:, :1], state["register_tokens"].expand(b, -1, -1), x[:, 1:]], 1)
    for i in range(layers):
        p = lambda name, i=i: state[f"blocks.{i}.{name}"]  # noqa: E731
        y = F.layer_norm(x, (D,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        q, k, v = F.linear(y, p("attn.qkv.weight"), p("attn.qkv.bias")).chunk(3, dim=-1)
        split = lambda t: t.reshape(b, -1, HEADS, D // HEADS).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        attn = (q @ k.transpose(-1, -2) / math.sqrt(D // HEADS)).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(b, -1, D)
        y = F.linear(y, p("attn.proj.weight"), p("attn.proj.bias"))
        x = x + (y * p("ls1.gamma") if f"blocks.{i}.ls1.gamma" in state else y)
        y = F.layer_norm(x, (D,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, p("mlp.fc1.weight"), p("mlp.fc1.bias"))),
                     p("mlp.fc2.weight"), p("mlp.fc2.bias"))  # fmt: skip
        x = x + (y * p("ls2.gamma") if f"blocks.{i}.ls2.gamma" in state else y)
    if norm:
        x = F.layer_norm(x, (D,), state["norm.weight"], state["norm.bias"], eps=1e-6)
    return x[:, 1 + registers :]


def save(state, path):
    torch.save(state, path)
    return str(path)


def vit(weights, **kwargs):
    return ENCODERS.build("vit", weights=weights, **TINY, **kwargs)


@pytest.mark.parametrize(
    ("v2", "registers"), [(False, 0), (True, 0), (True, 2)], ids=["dino", "dinov2", "dinov2-reg"]
)
@pytest.mark.parametrize("side", [M * P, 3 * P], ids=["native-grid", "interpolated"])
def test_published_layout_loads_and_matches_the_reference_forward(tmp_path, v2, registers, side):
    state = published_state(v2, registers)
    kwargs = {"layerscale": v2, "mask_token": v2, "num_registers": registers}
    enc = vit(save(state, tmp_path / "w.pth"), **kwargs)
    images = torch.rand(2, 3, side, side + P)  # non-square: rows and columns cannot swap
    with torch.no_grad():
        out = enc(images * 2 - 1)  # the encoder takes [-1, 1]
        expected = reference_tokens(state, images, registers=registers)
    assert out.grid == (side // P, side // P + 1)
    assert out.tokens.shape == (2, (side // P) * (side // P + 1), D)  # registers dropped
    torch.testing.assert_close(out.tokens, expected, atol=1e-5, rtol=1e-4)


def test_layer_and_final_norm_options_follow_the_reference(tmp_path):
    state = published_state()
    path = save(state, tmp_path / "w.pth")
    images = torch.rand(1, 3, M * P, M * P)
    with torch.no_grad():
        first = vit(path, layer=1)(images * 2 - 1).tokens
        normed = vit(path, norm=True)(images * 2 - 1).tokens
    torch.testing.assert_close(
        first, reference_tokens(state, images, layers=1), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        normed, reference_tokens(state, images, norm=True), atol=1e-5, rtol=1e-4
    )


def test_register_models_resize_positions_by_size_with_antialiasing(tmp_path):
    """DINOv2 `_reg4` checkpoints: interpolate_offset 0 and antialias True (hub/backbones.py)."""
    state = published_state(v2=True, registers=4)
    kw = {"layerscale": True, "mask_token": True, "num_registers": 4}
    enc = vit(save(state, tmp_path / "w.pth"), interpolate_offset=0.0, antialias=True, **kw)
    pos = state["pos_embed"]
    grid = pos[:, 1:].reshape(1, M, M, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(3, 4), mode="bicubic", antialias=True)
    expected = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 12, D)], 1)
    torch.testing.assert_close(enc.backbone.position_embedding(3, 4), expected)


def test_dino_full_training_checkpoint_is_unwrapped(tmp_path):
    """dino_*_full_checkpoint.pth: {'teacher': {'module.backbone.<key>': ..., 'module.head...'}}."""
    state = published_state()
    wrapped = {f"module.backbone.{k}": v for k, v in state.items()}
    wrapped["module.head.mlp.0.weight"] = torch.zeros(3, D)
    full = {"student": {}, "teacher": wrapped, "epoch": 100}
    images = torch.rand(1, 3, M * P, M * P) * 2 - 1
    plain = vit(save(state, tmp_path / "plain.pth"))(images).tokens
    from_full = vit(save(full, tmp_path / "full.pth"))(images).tokens
    torch.testing.assert_close(from_full, plain, rtol=0, atol=0)


def test_safetensors_checkpoints_load_too(tmp_path):
    from safetensors.torch import save_file

    state = published_state()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    images = torch.rand(1, 3, M * P, M * P) * 2 - 1
    a = vit(str(tmp_path / "w.safetensors"))(images).tokens
    b = vit(save(state, tmp_path / "w.pth"))(images).tokens
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_same_image_twice_gives_the_same_tokens_alone_or_in_a_batch(tmp_path):
    enc = vit(save(published_state(), tmp_path / "w.pth"))
    images = torch.rand(3, 3, 2 * P, 3 * P) * 2 - 1
    a, b = enc(images).tokens, enc(images).tokens
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(enc(images[1:2]).tokens[0], a[1], atol=1e-6, rtol=0)


def test_frozen_by_default_eval_mode_and_no_gradients(tmp_path):
    enc = vit(save(published_state(), tmp_path / "w.pth"))
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert enc.training and not enc.backbone.training
    images = torch.rand(1, 3, 2 * P, 2 * P, requires_grad=True)
    assert not enc(images).tokens.requires_grad  # nothing to backpropagate into
    free = vit(save(published_state(), tmp_path / "w2.pth"), freeze=False)
    free(images).tokens.sum().backward()
    assert free.backbone.cls_token.grad is not None and images.grad is not None


def test_images_are_imagenet_normalised_and_resized_inside(tmp_path):
    state = published_state()
    enc = vit(save(state, tmp_path / "w.pth"), input_size=[2 * P, 3 * P])
    images = torch.rand(1, 3, 4 * P, 6 * P)  # twice the input size
    out = enc(images * 2 - 1)
    assert out.grid == (2, 3) == enc.grid_size(1000)  # the input size decides the grid
    resized = F.interpolate(images, size=(2 * P, 3 * P), mode="bilinear", antialias=True)
    torch.testing.assert_close(out.tokens, reference_tokens(state, resized), atol=1e-5, rtol=1e-4)


def test_published_shapes_of_the_real_checkpoints():
    """Spot checks of the published files' layouts (ViT-S/16: 197 positions; v2: 37² + 1)."""
    s16 = published_shapes(VIT_ARCHS["dino-vits16"])
    assert s16["pos_embed"] == (1, 197, 384) and s16["patch_embed.proj.weight"] == (384, 3, 16, 16)
    assert "blocks.11.mlp.fc2.weight" in s16 and "blocks.12.norm1.weight" not in s16
    assert "mask_token" not in s16 and "blocks.0.ls1.gamma" not in s16
    v2 = published_shapes(VIT_ARCHS["dinov2-vitb14"])
    assert v2["pos_embed"] == (1, 1370, 768) and v2["mask_token"] == (1, 768)
    assert v2["blocks.11.ls2.gamma"] == (768,) and v2["blocks.0.mlp.fc1.weight"] == (3072, 768)
    reg = published_shapes(VIT_ARCHS["dinov2-vits14-reg"])
    assert reg["register_tokens"] == (1, 4, 384)
    assert len(s16) == 4 + 12 * 12 + 2  # cls, pos, patch w/b; 12 per block; final norm w/b


# --------------------------------------------------------------------------- bad input
def test_missing_weights_file_names_the_published_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PROBSLOT_WEIGHTS", str(tmp_path))
    monkeypatch.setattr("probslot.encoders.vit.DEFAULT_WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match=r"'dino_deitsmall16_pretrain\.pth' \(published at "
                       r"https://dl\.fbaipublicfiles\.com/dino/.*\) in "):  # fmt: skip
        ENCODERS.build("dino-vits16")
    with pytest.raises(FileNotFoundError, match=r"'dinov2_vits14_pretrain\.pth'"):
        ENCODERS.build("dinov2-vits14", weights=str(tmp_path / "nope.pth"))
    (tmp_path / "dinov2_vitb14_pretrain.pth").write_bytes(b"")
    assert find_weights(VIT_ARCHS["dinov2-vitb14"]) == tmp_path / "dinov2_vitb14_pretrain.pth"


def test_mismatched_keys_or_shapes_are_one_line_errors_naming_the_expected_file(tmp_path):
    state = published_state(v2=True)  # DINOv2 keys (ls1/ls2, mask_token) into a DINO layout
    with pytest.raises(
        ValueError, match=r"published layout: unexpected mask_token, blocks\.0\.ls1"
    ):
        vit(save(state, tmp_path / "v2.pth"))
    state = published_state()
    del state["norm.bias"]
    with pytest.raises(ValueError, match=r"missing norm\.bias"):
        vit(save(state, tmp_path / "cut.pth"))
    with pytest.raises(
        ValueError,
        match=r"does not hold DINO ViT-S/16 weights in the published layout: missing "
        r".*wrong shape cls_token \(1, 1, 12\) \(expected \(1, 1, 384\)\).*"
        r"Expected 'dino_deitsmall16_pretrain\.pth' \(published at https://",
    ):
        ENCODERS.build("dino-vits16", weights=save(published_state(), tmp_path / "tiny.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"is not a readable PyTorch checkpoint"):
        vit(str(tmp_path / "junk.pth"))


def test_image_size_not_divisible_by_the_patch_size(tmp_path):
    enc = ENCODERS.build("dino-vits16", weights="random")
    with pytest.raises(ValueError, match=r"image size \(225, 225\) is not divisible by the patch "
                       r"size 16 of DINO ViT-S/16; use multiples of 16 \(e\.g\. 224, 240\)"):  # fmt: skip
        enc.grid_size(225)
    with pytest.raises(ValueError, match=r"image size \(20, 24\) is not divisible by the patch"):
        enc(torch.zeros(1, 3, 20, 24))
    with pytest.raises(
        ValueError, match=r"input_size \(100, 100\) is not divisible by the patch size 14"
    ):
        ENCODERS.build("dinov2-vits14", weights="random", input_size=100)


def test_bad_options():
    with pytest.raises(ValueError, match=r"layer must be an integer >= 1 and <= 12; got 13"):
        ENCODERS.build("dino-vits16", weights="random", layer=13)
    with pytest.raises(TypeError, match=r"freeze must be True or False; got 1 \(int\)"):
        ENCODERS.build("dino-vits16", weights="random", freeze=1)
    with pytest.raises(
        ValueError, match=r"has no published checkpoint; pass encoder_kwargs\.weights"
    ):
        ENCODERS.build("vit")


def test_spec_names_what_the_tokens_depend_on(tmp_path):
    path = save(published_state(), tmp_path / "w.pth")
    spec = vit(path, layer=1).spec(3 * P)
    assert spec["layer"] == 1 and spec["grid"] == [3, 3] and spec["dim"] == D
    import hashlib

    assert spec["weights_sha256"] == hashlib.sha256((tmp_path / "w.pth").read_bytes()).hexdigest()
    assert vit(path).spec(3 * P) != spec
    random = ENCODERS.build("vit", weights="random", **TINY)
    assert random.spec(3 * P)["weights_sha256"].startswith("params:")
