"""build_model: the one place that maps a ModelConfig to constructors."""

from __future__ import annotations

from probslot.decoders import DECODERS, FEATURE_DECODERS
from probslot.encoders import ENCODERS
from probslot.models.autoencoder import SlotAutoencoder
from probslot.models.config import ModelConfig
from probslot.models.features import FeatureAutoencoder, TokenMLP
from probslot.models.likelihood import LIKELIHOODS

__all__ = ["build_model"]


def build_model(cfg: ModelConfig) -> SlotAutoencoder:
    """Build the `SlotAutoencoder` described by `cfg` (preset resolved, options applied).

    ``encoder = ENCODERS[cfg.encoder](**encoder_kwargs)`` (out_dim defaults to slot_dim);
    ``grouping = GROUPINGS[cfg.grouping](num_slots, dim=encoder.out_dim, slot_dim, iters,
    **kwargs)``, wrapped in ``KeepGate(grouping, **cfg.keep_gate)`` when ``cfg.keep_gate`` is
    set; ``decoder = DECODERS[cfg.decoder](slot_dim=grouping.slot_dim, image_size,
    **kwargs)``. With ``target: features``: a `FeatureAutoencoder` whose grouping takes the token
    MLP's output (slot_dim) and whose decoder is ``FEATURE_DECODERS[cfg.decoder](slot_dim, grid,
    feature_dim=encoder.out_dim, **kwargs)``.
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(
            f"build_model expects a ModelConfig; got {type(cfg).__name__}. "
            "Wrap a plain dict as ModelConfig(**d)."
        )
    from probslot.nn import GROUPINGS, KeepGate

    r = cfg.resolve()
    encoder = ENCODERS.build(r.encoder, **r.encoder_kwargs)
    if r.target == "features":
        return _build_feature_model(r, encoder)
    grouping = GROUPINGS.build(
        r.grouping,
        num_slots=r.num_slots,
        dim=encoder.out_dim,
        slot_dim=r.slot_dim,
        iters=r.iters,
        **r.grouping_kwargs,
    )
    if r.keep_gate is not None:
        grouping = KeepGate(grouping, **r.keep_gate)
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


def _build_feature_model(r: ModelConfig, encoder) -> FeatureAutoencoder:
    """target: features (DINOSAUR): frozen encoder → token MLP → grouping → feature decoder."""
    from probslot.nn import GROUPINGS

    token_mlp = None
    if r.token_mlp is not None:
        token_mlp = TokenMLP(encoder.out_dim, r.token_mlp, r.slot_dim)
    grouping = GROUPINGS.build(
        r.grouping,
        num_slots=r.num_slots,
        dim=encoder.out_dim if token_mlp is None else token_mlp.out_dim,
        slot_dim=r.slot_dim,
        iters=r.iters,
        **r.grouping_kwargs,
    )
    decoder = FEATURE_DECODERS.build(
        r.decoder,
        slot_dim=grouping.slot_dim,
        grid=encoder.grid_size(r.image_hw),
        feature_dim=encoder.out_dim,
        **r.decoder_kwargs,
    )
    return FeatureAutoencoder(
        encoder, grouping, decoder, r.num_slots, image_size=r.image_hw, token_mlp=token_mlp
    )
