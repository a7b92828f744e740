"""Image encoders: images (b, 3, H, W) → EncoderOutput(tokens (b, n, D), grid (h, w)).

Registry ``ENCODERS``; every factory returns an ``nn.Module`` with attribute ``out_dim`` and
method ``grid_size(image_size) -> (h, w)``.
"""

from __future__ import annotations

from torch import nn

from probslot.encoders.cnn import CNNEncoder
from probslot.encoders.vit import VIT_ARCHS, ViTArch, ViTEncoder, named_factories
from probslot.layers import SoftPositionEmbed, build_grid, make_activation
from probslot.registry import Registry

__all__ = [
    "ENCODERS",
    "CNNEncoder",
    "SoftPositionEmbed",
    "VIT_ARCHS",
    "ViTArch",
    "ViTEncoder",
    "available_encoders",
    "build_encoder",
    "build_grid",
    "make_activation",
]

ENCODERS: Registry[nn.Module] = Registry("encoder")
ENCODERS.register("cnn")(CNNEncoder)
# frozen DINO / DINOv2 ViTs reading the published checkpoints (and `vit` of any size)
for _name, _factory in named_factories().items():
    ENCODERS.register(_name)(_factory)


def build_encoder(name: str, **kwargs) -> nn.Module:
    """Build a registered encoder by name; unknown names raise a "did you mean" ValueError."""
    return ENCODERS.build(name, **kwargs)


def available_encoders() -> list[str]:
    return ENCODERS.available()
