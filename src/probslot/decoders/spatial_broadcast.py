"""Additive decoders: each slot is decoded alone to RGB + alpha; alphas are softmaxed over slots.

Both forms share ``AdditiveDecoder.forward``, which packs the kept slots into one batch, decodes only
those and scatters the result back, so a pruned slot costs no compute (paper Eq. 7 / ARD pruning).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from probslot.decoders.common import (
    check_gates,
    check_odd,
    check_slots,
    gated_softmax,
    num_upsamplings,
    pack_kept,
    unpack_kept,
    upsampling_stack,
)
from probslot.layers import (
    SoftPositionEmbed,
    as_hw,
    as_int_tuple,
    build_grid,
    cell_centres,
    check_coord_dims,
    make_activation,
)
from probslot.typing import DecoderOutput
from probslot.validation import check_positive_int

__all__ = ["AdditiveDecoder", "BroadcastMLPDecoder", "SpatialBroadcastDecoder"]


_COORDS = "2 reads the slot's last two entries as its centre (y, x)"


class RelativePositionEmbed(nn.Module):
    """Linear(2 → dim) on the offsets (y, x) − c of grid cells from each slot's centre c.

    The decoders' ``coord_dims=2`` form: every slot is drawn in a frame centred on its own position
    (the mean of the position features in its mixture component), so what a slot's remaining
    entries describe is translation-invariant, as in invariant slot attention (Biza et al. 2023).
    forward(centres (m, 2), grid (n, 2)) → (m, n, dim).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2, dim)

    def forward(self, centres: Tensor, grid: Tensor) -> Tensor:
        # Linear(g − c) = Linear(g) − W c: one (n, dim) map and one (m, dim) shift, no (m, n, 2)
        return self.proj(grid)[None] - (centres @ self.proj.weight.T)[:, None]


class AdditiveDecoder(nn.Module):
    """Base class: f_d(s) = Σ_k m_k ⊙ x_k with masks m = softmax_k(alpha logits) (notes §7).

    Subclasses implement ``decode_each(slots (m, d)) → (m, 4, H, W)`` (RGB + alpha logit).
    forward(slots (b, k, d), keep (b, k) bool | None, gates (b, k) float | None) →
    DecoderOutput(recon (b, 3, H, W), masks (b, k, 1, H, W), per_slot (b, k, 3, H, W)).
    Skipped slots get mask 0 and per_slot 0, and the output equals decoding only the kept slots.
    Masks sum to 1 over the kept slots.

    ``gates`` (a `probslot.nn.KeepGate`'s, AdaSlot) weigh the alphas instead of skipping:
    masks_k = g_k e^{α_k} / Σ_j g_j e^{α_j} (`gated_softmax`), differentiable in g. Every slot
    is decoded (a gate of 0 still gets a gradient); gates of 1 give the plain output bit for bit,
    hard 0/1 gates the output of ``keep = gates > 0``.
    """

    slot_dim: int
    image_size: tuple[int, int]

    def decode_each(self, slots: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(
        self, slots: Tensor, keep: Tensor | None = None, gates: Tensor | None = None
    ) -> DecoderOutput:
        check_slots(slots, keep, self.slot_dim)
        b, k, _ = slots.shape
        check_gates(gates, b, k)
        packed, index = pack_kept(slots, keep)  # (m, d)
        out = self.decode_each(packed)  # (m, 4, H, W)
        rgb = unpack_kept(out[:, :3], index, b, k, 0.0)  # (b, k, 3, H, W)
        logits = unpack_kept(out[:, 3:], index, b, k, float("-inf"))  # (b, k, 1, H, W)
        masks = gated_softmax(logits, gates)  # exactly 0 on skipped and gated-off slots
        recon = (masks * rgb).sum(dim=1)  # (b, 3, H, W)
        return DecoderOutput(recon=recon, masks=masks, per_slot=rgb)


class SpatialBroadcastDecoder(AdditiveDecoder):
    """Spatial-broadcast CNN decoder (Watters et al. 2019; the additive decoder of the paper).

    Each slot is broadcast to an ``init_size`` grid, a soft position embedding is added, and
    ``len(channels)`` blocks of conv → act [→ ×2 nearest upsample] bring it to ``image_size`` (the
    first log2(image/init) blocks upsample, as the authors' ``dec_arch "8b1u2,16b1u2,32b1"``, so
    there must be at least one more block than upsamplings); a 1×1 conv gives RGB + alpha logit.
    A small ``init_size`` (8) with upsampling keeps it cheap: one conv per resolution.

    ``coord_dims=2``: the slot's last two entries are its centre (y, x) in [−1, 1] (a PSA with
    ``coord_dims=2`` puts them there); the other ``slot_dim − 2`` are broadcast and the position
    code is taken relative to the centre (`RelativePositionEmbed`), so moving a slot's centre
    moves what it draws.
    """

    def __init__(
        self,
        slot_dim: int,
        image_size: int | Sequence[int],
        init_size: int | Sequence[int] = 8,
        channels: Sequence[int] = (32, 32, 32, 32),
        kernel_size: int = 3,
        activation: str = "leaky_relu",
        coord_dims: int = 0,
    ) -> None:
        super().__init__()
        self.slot_dim = check_positive_int("slot_dim", slot_dim)
        self.coord_dims = check_coord_dims(coord_dims, self.slot_dim, "slot_dim", _COORDS)
        self.image_size = as_hw(image_size, "image_size")
        self.init_size = as_hw(init_size, "init_size")
        channels = as_int_tuple(channels, "channels")
        check_odd(kernel_size, "kernel_size")
        num_up = num_upsamplings(self.image_size, self.init_size)
        width = slot_dim - self.coord_dims
        self.pos: nn.Module = (
            RelativePositionEmbed(width) if self.coord_dims else SoftPositionEmbed(slot_dim)
        )
        if self.coord_dims:
            self.register_buffer("cells", cell_centres(*self.init_size), persistent=False)
        self.blocks = upsampling_stack(width, channels, kernel_size, num_up, activation)
        self.head = nn.Conv2d(channels[-1], 4, 1)

    def decode_each(self, slots: Tensor) -> Tensor:
        m, d = slots.shape
        h0, w0 = self.init_size
        if self.coord_dims:
            content, centres = slots[:, :-2], slots[:, -2:]  # (m, d − 2), (m, 2)
            pos = self.pos(centres, self.cells).transpose(1, 2).reshape(m, d - 2, h0, w0)
            grid = content[:, :, None, None] + pos  # (m, d − 2, h0, w0)
        else:
            grid = self.pos(slots[:, :, None, None].expand(m, d, h0, w0))  # (m, d, h0, w0)
        return self.head(self.blocks(grid))  # (m, 4, H, W)


class BroadcastMLPDecoder(AdditiveDecoder):
    """Per-pixel MLP form of the broadcast decoder (as in DINOSAUR's MLP decoder, at pixel level).

    Every pixel's RGB + alpha logit is MLP([slot, position code]); the first layer is split into
    Linear(d → hidden) on the slot plus Linear(4 → hidden) on (y, x, 1 − y, 1 − x), which equals
    one linear layer on the concatenation but never materialises it.

    ``coord_dims=2``: as `SpatialBroadcastDecoder`, the slot's last two entries are its centre and
    the position input is each pixel's offset from it (`RelativePositionEmbed`).
    """

    def __init__(
        self,
        slot_dim: int,
        image_size: int | Sequence[int],
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "leaky_relu",
        coord_dims: int = 0,
    ) -> None:
        super().__init__()
        self.slot_dim = check_positive_int("slot_dim", slot_dim)
        self.coord_dims = check_coord_dims(coord_dims, self.slot_dim, "slot_dim", _COORDS)
        self.image_size = as_hw(image_size, "image_size")
        widths = as_int_tuple(hidden, "hidden")
        self.slot_in = nn.Linear(slot_dim - self.coord_dims, widths[0])
        self.pos_in: nn.Module = (
            RelativePositionEmbed(widths[0])
            if self.coord_dims
            else nn.Linear(4, widths[0], bias=False)
        )
        layers: list[nn.Module] = [make_activation(activation)]
        for a, c in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, c), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], 4))
        self.mlp = nn.Sequential(*layers)
        grid = cell_centres(*self.image_size) if self.coord_dims else build_grid(*self.image_size)
        self.register_buffer("grid", grid, persistent=False)  # (H·W, 2) or (H, W, 4)

    def decode_each(self, slots: Tensor) -> Tensor:
        h, w = self.image_size
        if self.coord_dims:
            content, centres = slots[:, :-2], slots[:, -2:]  # (m, d − 2), (m, 2)
            pos = self.pos_in(centres, self.grid).reshape(-1, h, w, self.pos_in.proj.out_features)
            x = self.slot_in(content)[:, None, None, :] + pos  # (m, H, W, hidden)
        else:
            pos = self.pos_in(self.grid)  # (H, W, hidden)
            x = self.slot_in(slots)[:, None, None, :] + pos  # (m, H, W, hidden)
        return self.mlp(x).permute(0, 3, 1, 2)  # (m, 4, H, W)
