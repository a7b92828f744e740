"""Slot decoders: slots (b, k, d), keep (b, k) | None → DecoderOutput in the model's internal space.

Registry ``DECODERS``: ``broadcast`` and ``broadcast-mlp`` (additive: per-slot RGB + alpha, masks
and per-slot images returned), ``noa`` and ``transformer`` (non-additive: masks = per_slot = None).
Every factory takes ``slot_dim`` and ``image_size`` (int or (H, W)) plus its own options, and the
module exposes ``slot_dim`` and ``image_size`` (a (H, W) tuple).
"""

from __future__ import annotations

from torch import nn

from probslot.decoders.conv import NonAdditiveDecoder
from probslot.decoders.features import AutoregressiveFeatureDecoder, FeatureMLPDecoder
from probslot.decoders.spatial_broadcast import (
    AdditiveDecoder,
    BroadcastMLPDecoder,
    SpatialBroadcastDecoder,
)
from probslot.decoders.transformer import TransformerDecoder
from probslot.registry import Registry

__all__ = [
    "DECODERS",
    "FEATURE_DECODERS",
    "AdditiveDecoder",
    "AutoregressiveFeatureDecoder",
    "BroadcastMLPDecoder",
    "FeatureMLPDecoder",
    "NonAdditiveDecoder",
    "SpatialBroadcastDecoder",
    "TransformerDecoder",
    "available_decoders",
    "build_decoder",
    "is_additive",
]

DECODERS: Registry[nn.Module] = Registry("decoder")
DECODERS.register("broadcast")(SpatialBroadcastDecoder)
DECODERS.register("broadcast-mlp")(BroadcastMLPDecoder)
DECODERS.register("noa")(NonAdditiveDecoder)
DECODERS.register("transformer")(TransformerDecoder)

#: Decoders that reconstruct the encoder's tokens (DINOSAUR), for ``ModelConfig.target:
#: features``: factories take ``slot_dim``, ``grid`` and ``feature_dim`` (`decoders.features`).
FEATURE_DECODERS: Registry[nn.Module] = Registry("feature decoder")
FEATURE_DECODERS.register("feature-mlp")(FeatureMLPDecoder)
FEATURE_DECODERS.register("feature-transformer")(AutoregressiveFeatureDecoder)


def build_decoder(name: str, **kwargs) -> nn.Module:
    """Build a registered decoder by name; unknown names raise a "did you mean" ValueError."""
    return DECODERS.build(name, **kwargs)


def available_decoders() -> list[str]:
    return DECODERS.available()


def is_additive(decoder: nn.Module) -> bool:
    """True when the decoder returns per-slot masks and images (sum of per-slot images)."""
    return isinstance(decoder, AdditiveDecoder)
