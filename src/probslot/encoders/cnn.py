"""The paper's CNN encoder (notes §7): conv stem + conv blocks, soft position embedding, token MLP."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from probslot.encoders.layers import SoftPositionEmbed, as_hw, as_int_tuple, make_activation
from probslot.typing import EncoderOutput

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
    ) -> None:
        super().__init__()
        self.channels = as_int_tuple(channels, "channels")
        depth = len(self.channels)
        self.kernel_sizes = as_int_tuple(kernel_sizes, "kernel_sizes", depth)
        self.strides = as_int_tuple(strides, "strides", depth)
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be a positive int; got {out_dim!r}")
        self.out_dim = out_dim
        self.in_channels = in_channels
        make_activation(activation)  # validates the name before any layer is built
        self.activation = activation

        layers: list[nn.Module] = []
        width = in_channels
        for ch, ks, st in zip(self.channels, self.kernel_sizes, self.strides):
            layers += [
                nn.Conv2d(width, ch, ks, stride=st, padding=ks // 2),
                make_activation(activation),
            ]
            width = ch
        self.convs = nn.Sequential(*layers)
        self.pos = SoftPositionEmbed(width)
        self.mlp = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, out_dim),
            make_activation(activation),
            nn.Linear(out_dim, out_dim),
            make_activation(activation),
            nn.LayerNorm(out_dim),
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
        tokens = feats.flatten(2).transpose(1, 2)  # (b, h·w, C), row-major over the grid
        return EncoderOutput(tokens=self.mlp(tokens), grid=(h, w))
