"""Slot autoencoders that reconstruct frozen encoder features (DINOSAUR; the paper's Table 3).

frozen encoder f_e (DINO ViT) → tokens z (b, n, D) → token MLP → grouping (PSA / SA) → slots →
feature decoder → ẑ (b, n, D); the loss is the mean squared error between ẑ and z, the encoder
staying frozen (Seitzer et al. 2023: "bridging the gap to real-world object-centric learning").
The tokens z may come from a feature cache instead of the encoder (`probslot.data.features`):
pass them as ``features=`` and the encoder is not run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from probslot.decoders.common import check_keep
from probslot.layers import as_hw
from probslot.models.autoencoder import SlotAutoencoder
from probslot.typing import EncoderOutput, FeatureAutoencoderOutput, FeatureDecoderOutput
from probslot.validation import check_positive_int

__all__ = ["FeatureAutoencoder", "TokenMLP", "tokens_picture"]


class TokenMLP(nn.Module):
    """DINOSAUR's MLP between the frozen features and the grouping:
    LayerNorm(D) → Linear(D, hidden) → ReLU → Linear(hidden, out_dim).

    forward(tokens (b, n, D)) → (b, n, out_dim).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        self.net = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, check_positive_int("token_mlp", hidden)),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, tokens: Tensor) -> Tensor:
        return self.net(tokens)


class FeatureAutoencoder(SlotAutoencoder):
    """frozen encoder → (token MLP) → grouping → feature decoder, trained to reconstruct z.

    Images enter as for `SlotAutoencoder`: float (b, 3, H, W) in [0, 1] of ``image_size``; they
    reach the encoder in [−1, 1] (the ViT encoders normalise them with ImageNet statistics).

    Args:
        encoder: a frozen encoder (no parameter requires a gradient, else ValueError: the target
            would chase its own reconstruction), ``out_dim`` D, ``grid_size(image_size)``.
        grouping: ``module(tokens (b, n, dim), num_slots=None)`` with ``dim`` = the token MLP's
            ``out_dim`` (or D without one).
        decoder: a feature decoder (`probslot.decoders.FEATURE_DECODERS`) with ``grid`` = the
            encoder's grid at ``image_size`` and ``feature_dim`` = D.
        num_slots: default K.
        image_size: (H, W) of the images.
        token_mlp: module (b, n, D) → (b, n, dim), or None.

    ``forward(images, features=None)`` → `FeatureAutoencoderOutput` with ``recon``/``target``
    (b, n, D), ``masks`` (b, k, 1, H, W) (the decoder's token masks upsampled bilinearly) and
    ``attn_masks`` (b, k, H, W). ``loss(images, out)`` = mean (ẑ − z)².
    """

    target = "features"

    def __init__(
        self,
        encoder: nn.Module,
        grouping: nn.Module,
        decoder: nn.Module,
        num_slots: int,
        image_size: int | Sequence[int],
        token_mlp: nn.Module | None = None,
    ) -> None:
        nn.Module.__init__(self)  # SlotAutoencoder's checks are about image decoders
        check_positive_int("num_slots", num_slots)
        self.image_size = as_hw(image_size, "image_size")
        trainable = [n for n, p in encoder.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(
                "reconstructing features needs a frozen encoder (its tokens are the target); "
                f"{len(trainable)} encoder parameters require gradients (e.g. {trainable[0]}). "
                "Set encoder_kwargs.freeze: true"
            )
        grid = tuple(encoder.grid_size(self.image_size))
        dim = encoder.out_dim
        if (
            tuple(getattr(decoder, "grid", grid)) != grid
            or getattr(decoder, "feature_dim", dim) != dim
        ):
            raise ValueError(
                f"the decoder reconstructs {getattr(decoder, 'grid', '?')} tokens of size "
                f"{getattr(decoder, 'feature_dim', '?')} but the encoder gives a {grid} grid of "
                f"{dim}-d tokens at image_size {self.image_size}; build them for the same sizes"
            )
        gdim = token_mlp.out_dim if token_mlp is not None else dim
        if getattr(grouping, "dim", gdim) != gdim:
            raise ValueError(
                f"the grouping expects tokens of size {grouping.dim} but gets {gdim} "
                f"({'the token MLP' if token_mlp is not None else 'the encoder'}'s out_dim)"
            )
        sdim, ddim = getattr(grouping, "slot_dim", None), getattr(decoder, "slot_dim", None)
        if sdim is not None and ddim is not None and sdim != ddim:
            raise ValueError(
                f"the decoder expects slots of size {ddim} but the grouping gives slot_dim={sdim}"
            )
        self.encoder = encoder
        self.token_mlp = token_mlp
        self.grouping = grouping
        self.decoder = decoder
        self.num_slots = num_slots

    @property
    def additive(self) -> bool:
        """True when recon = Σ_k masks · per-slot tokens (`feature-mlp`)."""
        return bool(getattr(self.decoder, "additive", False))

    @property
    def token_grid(self) -> tuple[int, int]:
        return tuple(self.encoder.grid_size(self.image_size))

    def feature_spec(self) -> dict[str, Any]:
        """What the target tokens depend on (encoder, weights, layer, sizes): a cache must match."""
        spec = getattr(self.encoder, "spec", None)
        if spec is None:
            raise TypeError(f"encoder {type(self.encoder).__name__} has no spec(image_size)")
        return spec(self.image_size)

    def check_features(self, features: object, batch: int) -> Tensor:
        """`features` as float (b, n, D) tokens of this encoder (e.g. read from a cache)."""
        h, w = self.token_grid
        expected = (batch, h * w, self.encoder.out_dim)
        if not isinstance(features, Tensor) or not features.is_floating_point():
            got = features.dtype if isinstance(features, Tensor) else type(features).__name__
            raise TypeError(f"features must be a float tensor {expected}; got {got}")
        if tuple(features.shape) != expected:
            raise ValueError(
                f"features must be the encoder's tokens (batch, h·w, D) = {expected}; got "
                f"{tuple(features.shape)} (a feature cache of another encoder or image size?)"
            )
        return features

    # -- stages --------------------------------------------------------------------------------
    def _encode(
        self,
        images: Tensor,
        num_slots: int | None,
        grouping_args: Mapping[str, Any] | None,
        features: Tensor | None = None,
    ) -> tuple[EncoderOutput, Any]:
        k = self._num_slots(num_slots)
        if features is None:
            target = self.encoder(self.to_internal(images))
        else:
            tokens = self.check_features(features, images.shape[0])
            target = EncoderOutput(tokens=tokens.float(), grid=self.token_grid)
        tokens = target.tokens if self.token_mlp is None else self.token_mlp(target.tokens)
        return target, self.grouping(tokens, num_slots=k, **(grouping_args or {}))

    def encode(
        self,
        images: Tensor,
        num_slots: int | None = None,
        grouping_args: Mapping[str, Any] | None = None,
        features: Tensor | None = None,
    ) -> Any:
        """images (b, 3, H, W) in [0, 1] (and optionally their cached tokens) → grouping output."""
        self.check_images(images)
        return self._encode(images, num_slots, grouping_args, features)[1]

    def decode(
        self, slots: Tensor, keep: Tensor | None = None, targets: Tensor | None = None
    ) -> FeatureDecoderOutput:
        """slots (b, k, d) → FeatureDecoderOutput (tokens); autoregressive decoders are
        teacher-forced on `targets` (b, n, D) when given, else generate token by token."""
        if getattr(self.decoder, "autoregressive", False):
            return self.decoder(slots, keep=keep, targets=targets)
        return self.decoder(slots, keep=keep)

    def token_masks_to_image(self, masks: Tensor) -> Tensor:
        """(b, k, n) token masks → (b, k, 1, H, W), bilinear (stays on the simplex over k)."""
        return self.attention_masks(masks, self.token_grid).unsqueeze(2)

    def forward(
        self,
        images: Tensor,
        num_slots: int | None = None,
        keep: Tensor | None = None,
        grouping_args: Mapping[str, Any] | None = None,
        features: Tensor | None = None,
    ) -> FeatureAutoencoderOutput:
        """images (b, 3, H, W) in [0, 1] → FeatureAutoencoderOutput; ``features`` (b, n, D): the
        encoder's tokens of these images (from a cache), so the encoder is not run."""
        self.check_images(images)
        check_keep(keep, images.shape[0], self._num_slots(num_slots))
        target, grouping = self._encode(images, num_slots, grouping_args, features)
        if keep is None:
            keep = self.em_survivors(grouping, (grouping_args or {}).get("extensions"))
        decoded = self.decode(grouping.slots, keep=keep, targets=target.tokens)
        masks = None if decoded.masks is None else self.token_masks_to_image(decoded.masks)
        return FeatureAutoencoderOutput(
            recon=decoded.recon,
            masks=masks,
            per_slot=None,
            grouping=grouping,
            attn_masks=self.attention_masks(grouping.attn, target.grid),
            target=target.tokens,
        )

    def loss(self, images: Tensor, out: Any) -> Tensor:
        """Scalar mean squared error between the decoded and the encoder's tokens (DINOSAUR)."""
        if not isinstance(out, FeatureAutoencoderOutput):
            raise TypeError(
                f"out must be the FeatureAutoencoderOutput of this model; got {type(out).__name__}"
            )
        return (out.recon.float() - out.target.float()).pow(2).mean()

    @torch.no_grad()
    def reconstruct(self, images: Tensor, num_slots: int | None = None) -> Tensor:
        """(b, n, D) decoded tokens without gradients (a feature model draws no image)."""
        return self(images, num_slots=num_slots).recon


def tokens_picture(tokens: Tensor, size: Sequence[int]) -> Tensor:
    """(b, n, D) tokens → (b, 3, H, W) in [0, 1]: their first three principal components over
    the batch, each scaled to [0, 1], on the token grid (h/w = H/W) upsampled to `size` (nearest).
    For panels of feature models, which reconstruct tokens rather than pixels."""
    b, n, d = tokens.shape
    big_h, big_w = (int(s) for s in size)
    h = max(1, round((n * big_h / big_w) ** 0.5))
    w = n // h
    if h * w != n:
        raise ValueError(f"{n} tokens do not form a grid of the image's aspect {big_h}:{big_w}")
    flat = tokens.reshape(b * n, d).float()
    flat = flat - flat.mean(0)
    q = min(3, d, b * n)
    _, _, v = torch.pca_lowrank(flat, q=q, center=False)
    comps = flat @ v[:, :q]  # (b·n, q)
    if q < 3:
        comps = torch.cat([comps, comps.new_zeros(b * n, 3 - q)], dim=1)
    lo, hi = comps.amin(0), comps.amax(0)
    comps = (comps - lo) / (hi - lo).clamp_min(1e-8)
    grid = comps.reshape(b, h, w, 3).permute(0, 3, 1, 2)  # (b, 3, h, w)
    return torch.nn.functional.interpolate(grid, size=(big_h, big_w), mode="nearest")
