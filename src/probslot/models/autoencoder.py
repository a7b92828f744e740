"""Slot autoencoder: encoder → grouping → decoder (extract → group → decode), typed output."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probslot.decoders import is_additive
from probslot.decoders.common import check_keep
from probslot.layers import as_hw
from probslot.models.likelihood import MSE
from probslot.nn import KeepGate, unwrap_grouping
from probslot.typing import (
    AutoencoderOutput,
    DecoderOutput,
    EncoderOutput,
    SlotAttentionOutput,
    SlotPosterior,
)
from probslot.validation import check_positive_int

__all__ = ["SlotAutoencoder"]

Grouping = SlotPosterior | SlotAttentionOutput


class SlotAutoencoder(nn.Module):
    """An object-centric autoencoder x → z = f_e(x) → slots (PSA/SA) → x̂ = f_d(slots) (paper §3).

    Images enter exactly as datasets yield them: float (b, 3, H, W) in [0, 1], with (H, W) equal
    to ``image_size``. Internally they are mapped to [−1, 1] (as the authors' code) for the
    encoder, the decoder output and the likelihood; every output is mapped back to [0, 1].

    Args:
        encoder: ``module(images (b, 3, H, W)) → EncoderOutput``, attribute ``out_dim``.
        grouping: ``module(tokens (b, n, out_dim), num_slots=None) → SlotPosterior |
            SlotAttentionOutput``, attribute ``slot_dim``.
        decoder: ``module(slots (b, k, slot_dim), keep=None) → DecoderOutput``, attribute
            ``image_size``; with a keep gate (`probslot.nn.KeepGate` around the grouping) an
            additive decoder that also takes ``gates=`` (b, k).
        num_slots: default number of slots K (override per call).
        likelihood: module with ``nll(recon, target) → scalar`` in [−1, 1] space (default `MSE`).
        image_size: (H, W) the model accepts; default the decoder's ``image_size``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        grouping: nn.Module,
        decoder: nn.Module,
        num_slots: int,
        likelihood: nn.Module | None = None,
        image_size: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("num_slots", num_slots)
        if image_size is None:
            if not hasattr(decoder, "image_size"):
                raise ValueError(
                    "image_size is required when the decoder has no `image_size` attribute; "
                    f"got decoder {type(decoder).__name__}"
                )
            image_size = decoder.image_size
        self.image_size = as_hw(image_size, "image_size")
        dim, gdim = getattr(encoder, "out_dim", None), getattr(grouping, "dim", None)
        if dim is not None and gdim is not None and dim != gdim:
            raise ValueError(
                f"the grouping expects tokens of size {gdim} but the encoder gives out_dim={dim}; "
                "build them with the same size"
            )
        sdim, ddim = getattr(grouping, "slot_dim", None), getattr(decoder, "slot_dim", None)
        if sdim is not None and ddim is not None and sdim != ddim:
            raise ValueError(
                f"the decoder expects slots of size {ddim} but the grouping gives slot_dim={sdim}; "
                "build them with the same slot_dim"
            )
        coords = {
            part: getattr(module, "coord_dims", 0)
            for part, module in (("encoder", encoder), ("grouping", grouping), ("decoder", decoder))
        }
        if coords["encoder"] != coords["grouping"] or (
            coords["decoder"] and coords["decoder"] != coords["grouping"]
        ):
            raise ValueError(
                "positions in the mixture need the same coord_dims in the encoder (which appends "
                "them), the grouping (which keeps them out of its LayerNorm) and, optionally, the "
                f"decoder (which draws around them); got {coords}. Set coord_dims: 2 in "
                "encoder_kwargs, grouping_kwargs and decoder_kwargs"
            )
        if isinstance(grouping, KeepGate) and not is_additive(decoder):
            raise ValueError(
                "a keep gate weighs the alpha masks of an additive decoder (AdaSlot); got "
                f"decoder {type(decoder).__name__}, which has none. Use the decoder broadcast "
                "or broadcast-mlp, or drop keep_gate"
            )
        dsize = getattr(decoder, "image_size", None)
        if dsize is not None and tuple(dsize) != self.image_size:
            raise ValueError(
                f"the decoder produces images of size {tuple(dsize)} but image_size={self.image_size}"
            )
        self.encoder = encoder
        self.grouping = grouping
        self.decoder = decoder
        self.num_slots = num_slots
        self.likelihood = likelihood if likelihood is not None else MSE()

    # -- image space ---------------------------------------------------------------------------
    @staticmethod
    def to_internal(images: Tensor) -> Tensor:
        """[0, 1] → [−1, 1]."""
        return images * 2.0 - 1.0

    @staticmethod
    def to_unit(images: Tensor) -> Tensor:
        """[−1, 1] → [0, 1]."""
        return (images + 1.0) * 0.5

    def check_images(self, images: object) -> Tensor:
        """Raise a ValueError/TypeError unless `images` is a float (b, 3, H, W) batch of the model's size."""
        h, w = self.image_size
        expected = f"(batch, 3, {h}, {w}) (3 RGB channels, values in [0, 1])"
        if not isinstance(images, Tensor):
            raise TypeError(
                f"images must be a float tensor of shape {expected}; got {type(images).__name__}"
            )
        if not images.is_floating_point():
            raise TypeError(
                f"images must be a float tensor of shape {expected}; got dtype {images.dtype} "
                "(convert uint8 images with images.float() / 255)"
            )
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (h, w):
            raise ValueError(
                f"images must have shape {expected}; got shape {tuple(images.shape)}. "
                "Pass RGB images resized to the model's image_size (or build the model with the "
                "image_size of your data)."
            )
        return images

    def _num_slots(self, num_slots: int | None) -> int:
        if num_slots is None:
            return self.num_slots
        return check_positive_int("num_slots", num_slots)

    # -- stages --------------------------------------------------------------------------------
    def _encode(
        self, images: Tensor, num_slots: int | None, grouping_args: Mapping[str, Any] | None
    ) -> tuple[EncoderOutput, Grouping]:
        # the public entry points (`encode`, `forward`) have validated `images` already
        k = self._num_slots(num_slots)
        features = self.encoder(self.to_internal(images))
        grouping = self.grouping(features.tokens, num_slots=k, **(grouping_args or {}))
        return features, grouping

    def encode(
        self,
        images: Tensor,
        num_slots: int | None = None,
        grouping_args: Mapping[str, Any] | None = None,
    ) -> Grouping:
        """images (b, 3, H, W) in [0, 1] → the grouping output (`SlotPosterior` for PSA).

        ``grouping_args`` are keyword arguments of this call of the grouping module, e.g. PSA's
        ``temperature`` or ``extensions`` (a training schedule, the pruning analysis).
        """
        self.check_images(images)
        return self._encode(images, num_slots, grouping_args)[1]

    def _unit_output(self, out: DecoderOutput, keep: Tensor | None) -> DecoderOutput:
        per_slot = out.per_slot
        if per_slot is not None:
            per_slot = self.to_unit(per_slot)
            if keep is not None:  # skipped slots stay all-zero images, not mid-grey
                per_slot = per_slot * keep[:, :, None, None, None]
        return DecoderOutput(recon=self.to_unit(out.recon), masks=out.masks, per_slot=per_slot)

    def decode(
        self, slots: Tensor, keep: Tensor | None = None, gates: Tensor | None = None
    ) -> DecoderOutput:
        """slots (b, k, d), keep (b, k) bool | None, gates (b, k) float | None → DecoderOutput
        in [0, 1] image space (not clamped; see `AutoencoderOutput.recon`).

        ``gates`` are a keep gate's (`probslot.nn.KeepGate`), for an additive decoder. When no
        gradient can flow through them and they are hard (all 0 or 1, as in eval), they become
        part of ``keep``, so gated-off slots cost no decoder compute; otherwise (training) every
        slot is decoded and the gates weigh the alpha masks.
        """
        if gates is not None:
            hard = not (torch.is_grad_enabled() and gates.requires_grad) and bool(
                ((gates == 0) | (gates == 1)).all()
            )
            if hard:
                on = gates > 0
                keep, gates = (on if keep is None else keep & on), None
        if gates is None:
            return self._unit_output(self.decoder(slots, keep=keep), keep)
        return self._unit_output(self.decoder(slots, keep=keep, gates=gates), keep)

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) token grid of the encoder at the model's image size (N = h·w tokens)."""
        return tuple(self.encoder.grid_size(self.image_size))

    @property
    def additive(self) -> bool:
        """True when the decoder returns per-slot masks and images (`broadcast`, `broadcast-mlp`)."""
        return is_additive(self.decoder)

    def attention_masks(self, attn: Tensor, grid: tuple[int, int]) -> Tensor:
        """(b, k, n) grouping attention → (b, k, H, W), bilinear upsampling of the (h, w) token grid.

        Bilinear weights sum to 1, so the masks stay on the simplex over slots.
        """
        b, k, n = attn.shape
        h, w = grid
        assert n == h * w, f"attention covers {n} tokens but the grid is {grid}"
        maps = attn.reshape(b, k, h, w)  # row-major token order, as the encoder flattens
        if (h, w) == self.image_size:
            return maps
        return F.interpolate(maps, size=self.image_size, mode="bilinear", align_corners=False)

    def em_survivors(
        self, grouping: Grouping, extensions: Sequence[nn.Module] | None = None
    ) -> Tensor | None:
        """(b, k) bool: the slots left alive inside EM (π > 0) when the grouping's extensions
        (`extensions`, else the module's own) can remove slots (ARD pruning, merging), else None
        (every slot). Pruned and merged-away slots are not decoded."""
        inner = unwrap_grouping(self.grouping)
        parts = getattr(inner, "extensions", ()) if extensions is None else extensions
        if any(getattr(part, "removes_slots", False) for part in parts):
            return grouping.pi > 0
        return None

    def forward(
        self,
        images: Tensor,
        num_slots: int | None = None,
        keep: Tensor | None = None,
        grouping_args: Mapping[str, Any] | None = None,
    ) -> AutoencoderOutput:
        """images (b, 3, H, W) in [0, 1] → AutoencoderOutput (recon, masks, per_slot in [0, 1]
        image space, not clamped: see `AutoencoderOutput.recon`).

        ``keep`` (b, k) bool skips slots in the decoder (ARD pruning, paper Eq. 7); the grouping
        still runs with all k slots, so the attention masks cover all of them. A keep gate's
        ``gates`` (in the grouping output) are applied on top (see `decode`).
        ``grouping_args``: keyword arguments of this call of the grouping (see `encode`).
        """
        self.check_images(images)
        check_keep(keep, images.shape[0], self._num_slots(num_slots))
        features, grouping = self._encode(images, num_slots, grouping_args)
        if keep is None:
            keep = self.em_survivors(grouping, (grouping_args or {}).get("extensions"))
        decoded = self.decode(grouping.slots, keep=keep, gates=getattr(grouping, "gates", None))
        return AutoencoderOutput(
            recon=decoded.recon,
            masks=decoded.masks,
            per_slot=decoded.per_slot,
            grouping=grouping,
            attn_masks=self.attention_masks(grouping.attn, features.grid),
        )

    def loss(self, images: Tensor, out: AutoencoderOutput | DecoderOutput) -> Tensor:
        """Scalar −log p(images | slots) under the likelihood (mean per sub-pixel, [−1, 1] space)."""
        self.check_images(images)
        if out.recon.shape != images.shape:
            raise ValueError(
                f"out.recon has shape {tuple(out.recon.shape)} but images have shape "
                f"{tuple(images.shape)}; pass the output computed from these images"
            )
        return self.likelihood.nll(self.to_internal(out.recon), self.to_internal(images))

    @torch.no_grad()
    def reconstruct(self, images: Tensor, num_slots: int | None = None) -> Tensor:
        """(b, 3, H, W) reconstruction in [0, 1] without gradients (for panels)."""
        return self(images, num_slots=num_slots).recon.clamp(0.0, 1.0)
