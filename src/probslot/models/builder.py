"""build_model: the one place that maps a ModelConfig to constructors."""

from __future__ import annotations

from probslot.decoders import DECODERS
from probslot.encoders import ENCODERS
from probslot.models.autoencoder import SlotAutoencoder
from probslot.models.config import ModelConfig
from probslot.models.likelihood import LIKELIHOODS

__all__ = ["build_model"]


def build_model(cfg: ModelConfig) -> SlotAutoencoder:
    """Build the `SlotAutoencoder` described by `cfg` (preset resolved, options applied).

    encoder = ENCODERS[cfg.encoder](**encoder_kwargs) (out_dim defaults to slot_dim);
    grouping = GROUPINGS[cfg.grouping](num_slots, dim=encoder.out_dim, slot_dim, iters, **kwargs);
    decoder = DECODERS[cfg.decoder](slot_dim=grouping.slot_dim, image_size, **kwargs).
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(
            f"build_model expects a ModelConfig; got {type(cfg).__name__}. "
            "Wrap a plain dict as ModelConfig(**d)."
        )
    from probslot.nn import GROUPINGS

    r = cfg.resolve()
    encoder = ENCODERS.build(r.encoder, **r.encoder_kwargs)
    grouping = GROUPINGS.build(
        r.grouping,
        num_slots=r.num_slots,
        dim=encoder.out_dim,
        slot_dim=r.slot_dim,
        iters=r.iters,
        **r.grouping_kwargs,
    )
    decoder = DECODERS.build(
        r.decoder, slot_dim=grouping.slot_dim, image_size=r.image_hw, **r.decoder_kwargs
    )
    likelihood = LIKELIHOODS.build(r.likelihood, **r.likelihood_kwargs)
    return SlotAutoencoder(
        encoder,
        grouping,
        decoder,
        num_slots=r.num_slots,
        likelihood=likelihood,
        image_size=r.image_hw,
    )
