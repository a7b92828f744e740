"""Axis legend and the frozen output dataclasses shared by every module.

Axis legend (used in docstrings, shape comments and einops patterns):

====  =====================================================
b     batch (images)
n     tokens (encoder outputs; N = h * w for image encoders)
k     slots (mixture components)
d     slot / feature dimension
c     channels (3 for RGB)
h, w  image or token-grid height and width
m     images in a dataset (aggregate posterior)
====  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from probslot.relevance import relevant

__all__ = [
    "AutoencoderOutput",
    "DecoderOutput",
    "EncoderOutput",
    "FeatureAutoencoderOutput",
    "FeatureDecoderOutput",
    "SlotAttentionOutput",
    "SlotPosterior",
]


@dataclass(frozen=True)
class SlotPosterior:
    """Per-image Gaussian mixture over tokens found by Probabilistic Slot Attention (paper Eq. 6).

    Attributes:
        mu:   (b, k, d) slot means μ(T).
        var:  (b, k, d) diagonal slot variances σ(T)².
        pi:   (b, k) mixing weights π(T); each row lies on the simplex.
        attn: (b, k, n) responsibilities A (sum to 1 over k for each real token; 0 on masked tokens).
        gates: (b, k) keep gates g of a learned keep gate (`probslot.nn.KeepGate`), else None;
            the additive decoder weighs each slot's alpha by g (see `KeepGate`).
        keep_prob: (b, k) the gate's keep probabilities σ(ℓ), else None.
    """

    mu: Tensor
    var: Tensor
    pi: Tensor
    attn: Tensor
    gates: Tensor | None = None
    keep_prob: Tensor | None = None

    @property
    def slots(self) -> Tensor:
        """(b, k, d) the slots passed to a decoder: the means μ(T), as the authors' code decodes."""
        return self.mu

    @property
    def num_slots(self) -> int:
        return self.mu.shape[1]

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """(b, k, d) reparameterised draws s_k = μ_k + σ_k ε, ε ~ N(0, I); differentiable in μ and σ²."""
        eps = torch.randn(
            self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype
        )
        return self.mu + self.var.sqrt() * eps

    def active(self, tau: float) -> Tensor:
        """(b, k) bool mask of the relevant slots (Eq. 7, `probslot.relevance.relevant`): π_k > τ,
        and each image keeps its largest slot when none passes."""
        return relevant(self.pi, tau)


@dataclass(frozen=True)
class SlotAttentionOutput:
    """Output of the slot-attention baseline (Locatello et al. 2020) and of the AE baseline
    (`probslot.nn.FlatSlots`, whose attention is uniform).

    Attributes:
        slots: (b, k, d) slot vectors after the last iteration.
        attn:  (b, k, n) attention over slots (softmax over k for each token).
        gates: (b, k) keep gates of a learned keep gate (`probslot.nn.KeepGate`), else None.
        keep_prob: (b, k) the gate's keep probabilities, else None.
    """

    slots: Tensor
    attn: Tensor
    gates: Tensor | None = None
    keep_prob: Tensor | None = None

    @property
    def num_slots(self) -> int:
        return self.slots.shape[1]


@dataclass(frozen=True)
class EncoderOutput:
    """Encoder contract: tokens (b, n, d) on a (h, w) grid with n = h * w."""

    tokens: Tensor
    grid: tuple[int, int]


@dataclass(frozen=True)
class DecoderOutput:
    """Decoder contract.

    Attributes:
        recon:    (b, 3, H, W) reconstruction.
        masks:    (b, k, 1, H, W) alpha masks summing to 1 over k (additive decoders), else None.
        per_slot: (b, k, 3, H, W) per-slot RGB (additive decoders), else None.
    """

    recon: Tensor
    masks: Tensor | None = None
    per_slot: Tensor | None = None


@dataclass(frozen=True)
class AutoencoderOutput:
    """Everything a slot autoencoder computes for one batch.

    Attributes:
        recon:      (b, 3, H, W) reconstruction in [0, 1] image space, *not clamped*: the
                    likelihood is computed on it, and clamping would zero its gradient where
                    the decoder overshoots, so values slightly outside [0, 1] occur (−0.3…1.1
                    seen early in training); clamp for display or metrics, as
                    `SlotAutoencoder.reconstruct` and every analysis do.
        masks:      (b, k, 1, H, W) decoder alpha masks, or None for non-additive decoders.
        per_slot:   (b, k, 3, H, W) per-slot images, or None.
        grouping:   the grouping output (`SlotPosterior` for PSA, `SlotAttentionOutput` for SA
                    and the AE baseline; with a keep gate its ``gates`` and ``keep_prob`` are set).
        attn_masks: (b, k, H, W) grouping attention upsampled to image size.
    """

    recon: Tensor
    masks: Tensor | None
    per_slot: Tensor | None
    grouping: SlotPosterior | SlotAttentionOutput
    attn_masks: Tensor

    @property
    def slots(self) -> Tensor:
        return self.grouping.slots


@dataclass(frozen=True)
class FeatureDecoderOutput:
    """Feature-decoder contract (DINOSAUR: the decoder reconstructs the encoder's tokens).

    Attributes:
        recon:    (b, n, D) reconstructed tokens, row-major over the encoder's (h, w) grid.
        masks:    (b, k, n) each token's weights over slots, summing to 1 over k: the alpha masks
                  of an additive decoder, the last cross-attention of a transformer; or None.
        per_slot: (b, k, n, D) per-slot tokens (additive decoders), else None.
    """

    recon: Tensor
    masks: Tensor | None = None
    per_slot: Tensor | None = None


@dataclass(frozen=True)
class FeatureAutoencoderOutput(AutoencoderOutput):
    """`AutoencoderOutput` of a model that reconstructs features (`probslot.models.FeatureAutoencoder`).

    ``recon`` and ``target`` are (b, n, D) tokens (the decoded and the frozen encoder's), not
    images; ``masks`` (b, k, 1, H, W) are the decoder's token masks upsampled to the image (None
    when the decoder has none), ``per_slot`` is None and ``attn_masks`` as for images.
    """

    target: Tensor
