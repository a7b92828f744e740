"""Slot autoencoders (encoder → grouping → decoder), likelihoods, ModelConfig, presets, builder.

>>> from probslot.models import ModelConfig, build_model
>>> model = build_model(ModelConfig(preset="PSA", image_size=32, num_slots=4))
>>> out = model(images)            # images (b, 3, 32, 32) in [0, 1]
>>> loss = model.loss(images, out)
"""

from __future__ import annotations

from probslot.models.autoencoder import SlotAutoencoder
from probslot.models.builder import build_model
from probslot.models.config import PRESETS, ModelConfig, Preset, available_presets, get_preset
from probslot.models.features import FeatureAutoencoder, TokenMLP
from probslot.models.likelihood import (
    LIKELIHOODS,
    MSE,
    DiscretisedGaussian,
    build_likelihood,
)

__all__ = [
    "LIKELIHOODS",
    "MSE",
    "PRESETS",
    "DiscretisedGaussian",
    "FeatureAutoencoder",
    "ModelConfig",
    "Preset",
    "SlotAutoencoder",
    "TokenMLP",
    "available_presets",
    "build_likelihood",
    "build_model",
    "get_preset",
]
