"""The paper's CNN encoder (notes §7): conv stem + conv blocks, soft position embedding, token MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probslot.layers import (
    SoftPositionEmbed,
    as_hw,
    as_int_tuple,
    cell_centres,
    check_coord_dims,
    make_activation,
)
from probslot.typing import EncoderOutput
from probslot.validation import check_choice, check_positive_int

__all__ = ["CNNEncoder"]


class CNNEncoder(nn.Module):
    """Convolutional encoder f_e: X → Z ⊆ R^{N×D} (paper §3; architecture of the authors' code, notes §7).

    Layers: ``len(channels)`` convolutions (the first is the stem, e.g. 7×7 in the authors' code),
    each followed by the activation; ``strides`` > 1 downsample, so a 32×32 image with strides
    (1, 2, 1, 1) gives a 16×16 token grid and (1, 2, 2, 1) an 8×8 grid. Then a soft position
    embedding (Linear(4 → C) on (y, x, 1 − y, 1 − x)) is added, the map is flattened to tokens,
    and each token goes through LayerNorm(C) → Linear(C, D) → act → Linear(D, D) → act → LayerNorm(D).

    The defaults follow the authors' CLEVR encoder (7×7 stem to 16 channels, 3×3 blocks of
    32/64/64 channels, one stride-2 block: 64×64 images → 32×32 tokens); for small CPU runs use
    e.g. ``channels=(32, 32, 32, 32), kernel_sizes=(5, 3, 3, 3), strides=(1, 2, 2, 1)`` (32×32 → 8×8).

    LeakyReLU is the default: the paper's identifiability result assumes a weakly injective
    encoder/decoder (Assumption 8); the authors' code uses ReLU (notes §11.7), selectable here.

    ``coord_dims=2`` replaces the soft position embedding with explicit positions: the features
    stay translation-equivariant (no position is added), the token MLP gives ``out_dim − 2``
    features, and each token's image-plane centre (y, x) in [−1, 1] (`cell_centres`) is appended
    as its last two features. A PSA grouping built with the same ``coord_dims`` then fits each
    slot's Gaussian over appearance *and* position, so a slot's mean ends in the responsibility-
    weighted centre of its tokens, and a decoder with ``coord_dims=2`` draws each slot around that
    centre (docs/training.md, "Positions in the mixture"). 0 (default) is the paper's encoder.

    ``padding_mode`` is the convolutions' border padding (PyTorch's ``"zeros"``, ``"replicate"``,
    ``"reflect"`` or ``"circular"``). Zeros (default, the authors') make tokens at the image
    border differ from interior tokens of the same plain background, since the normalised
    background (e.g. black = −1) is not 0; PSA then gives the border a slot of its own (measured:
    spare slots take frames and bands of background). ``"replicate"`` keeps a plain background
    plain up to the border, so the features are translation-equivariant there too.

    forward(images (b, 3, H, W), already normalised) → EncoderOutput(tokens (b, h·w, D), grid (h, w)).
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 64),
        kernel_sizes: Sequence[int] = (7, 3, 3, 3),
        strides: Sequence[int] = (1, 1, 2, 1),
        out_dim: int = 64,
        activation: str = "leaky_relu",
        in_channels: int = 3,
        coord_dims: int = 0,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.channels = as_int_tuple(channels, "channels")
        depth = len(self.channels)
        self.kernel_sizes = as_int_tuple(kernel_sizes, "kernel_sizes", depth)
        self.strides = as_int_tuple(strides, "strides", depth)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.coord_dims = check_coord_dims(
            coord_dims,
            out_dim,
            "out_dim",
            "2 appends each token's (y, x) instead of the soft position embedding",
        )
        modes = ("zeros", "replicate", "reflect", "circular")
        self.padding_mode = check_choice("padding_mode", padding_mode, modes)
        self.in_channels = check_positive_int("in_channels", in_channels)
        make_activation(activation)  # validates the name before any layer is built
        self.activation = activation

        layers: list[nn.Module] = []
        width = in_channels
        for ch, ks, st in zip(self.channels, self.kernel_sizes, self.strides):
            layers += [
                nn.Conv2d(width, ch, ks, stride=st, padding=ks // 2, padding_mode=padding_mode),
                make_activation(activation),
            ]
            width = ch
        self.convs = nn.Sequential(*layers)
        self.pos: nn.Module = SoftPositionEmbed(width) if coord_dims == 0 else nn.Identity()
        feat_dim = out_dim - coord_dims
        self.mlp = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, feat_dim),
            make_activation(activation),
            nn.Linear(feat_dim, feat_dim),
            make_activation(activation),
            nn.LayerNorm(feat_dim),
        )

    def grid_size(self, image_size: int | Sequence[int]) -> tuple[int, int]:
        """(h, w) token grid for an image of `image_size` (int or (H, W)); N = h·w tokens."""
        h, w = as_hw(image_size, "image_size")
        for ks, st in zip(self.kernel_sizes, self.strides):
            pad = ks // 2
            h = (h + 2 * pad - ks) // st + 1
            w = (w + 2 * pad - ks) // st + 1
        return h, w

    def forward(self, images: Tensor) -> EncoderOutput:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must be (batch, {self.in_channels}, height, width) with {self.in_channels} "
                f"channels; got shape {tuple(images.shape)}"
            )
        feats = self.pos(self.convs(images))  # (b, C, h, w)
        b, c, h, w = feats.shape
        tokens = self.mlp(feats.flatten(2).transpose(1, 2))  # (b, h·w, D − coord_dims), row-major
        if self.coord_dims:
            coords = cell_centres(h, w, device=tokens.device, dtype=tokens.dtype)  # (h·w, 2)
            tokens = torch.cat([tokens, coords.expand(b, h * w, 2)], dim=-1)  # (b, h·w, D)
        return EncoderOutput(tokens=tokens, grid=(h, w))
