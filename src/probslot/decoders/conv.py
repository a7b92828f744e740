"""Non-additive convolutional decoder: slots composited at feature level, then one shared CNN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probslot.decoders.common import (
    check_odd,
    check_slots,
    num_upsamplings,
    pack_kept,
    unpack_kept,
    upsampling_stack,
)
from probslot.layers import SoftPositionEmbed, as_hw, as_int_tuple
from probslot.typing import DecoderOutput
from probslot.validation import check_positive_int

__all__ = ["NonAdditiveDecoder"]


class NonAdditiveDecoder(nn.Module):
    """The "NoA" decoder of the authors' code (notes §11.5), used by the SA-NoA and PSA-NoA models.

    1. Per slot: broadcast to ``init_size`` + soft position embedding, ``slot_channels`` conv
       blocks, then a 1×1 conv to ``feature_dim`` features plus one alpha logit.
    2. The alphas are softmaxed over slots and the features summed with them: one (feature_dim,
       h0, w0) map per image. Objects therefore interact before pixels are produced, so the map
       from slots to image is not a sum of per-slot images (not additive).
    3. One shared CNN (``channels`` blocks of conv → act, the first log2(image/init) followed by
       a ×2 upsampling) + 1×1 conv → RGB.

    forward(slots (b, k, d), keep (b, k) bool | None) → DecoderOutput(recon (b, 3, H, W), None, None).
    Skipped slots are left out of step 1 (no compute) and of the composite, so the output equals
    decoding only the kept slots.
    """

    def __init__(
        self,
        slot_dim: int,
        image_size: int | Sequence[int],
        init_size: int | Sequence[int] = 8,
        slot_channels: Sequence[int] = (32, 32),
        feature_dim: int = 32,
        channels: Sequence[int] = (32, 32, 32, 32),
        kernel_size: int = 3,
        activation: str = "leaky_relu",
    ) -> None:
        super().__init__()
        self.slot_dim = check_positive_int("slot_dim", slot_dim)
        self.image_size = as_hw(image_size, "image_size")
        self.init_size = as_hw(init_size, "init_size")
        self.feature_dim = check_positive_int("feature_dim", feature_dim)
        slot_channels = as_int_tuple(slot_channels, "slot_channels")
        channels = as_int_tuple(channels, "channels")
        check_odd(kernel_size, "kernel_size")
        num_up = num_upsamplings(self.image_size, self.init_size)
        self.pos = SoftPositionEmbed(slot_dim)
        self.slot_blocks = upsampling_stack(slot_dim, slot_channels, kernel_size, 0, activation)
        self.slot_head = nn.Conv2d(slot_channels[-1], feature_dim + 1, 1)
        self.shared = upsampling_stack(feature_dim, channels, kernel_size, num_up, activation)
        self.head = nn.Conv2d(channels[-1], 3, 1)

    def forward(self, slots: Tensor, keep: Tensor | None = None) -> DecoderOutput:
        check_slots(slots, keep, self.slot_dim)
        b, k, d = slots.shape
        h0, w0 = self.init_size
        packed, index = pack_kept(slots, keep)  # (m, d)
        grid = packed[:, :, None, None].expand(packed.shape[0], d, h0, w0)  # (m, d, h0, w0)
        out = self.slot_head(self.slot_blocks(self.pos(grid)))  # (m, F + 1, h0, w0)
        feats = unpack_kept(out[:, :-1], index, b, k, 0.0)  # (b, k, F, h0, w0)
        logits = unpack_kept(out[:, -1:], index, b, k, float("-inf"))  # (b, k, 1, h0, w0)
        alpha = torch.softmax(logits, dim=1)
        composite = (alpha * feats).sum(dim=1)  # (b, F, h0, w0)
        recon = self.head(self.shared(composite))  # (b, 3, H, W)
        return DecoderOutput(recon=recon, masks=None, per_slot=None)
