"""The AE baseline: slots from an MLP on the pooled token grid, without any grouping.

The "additive autoencoder without slot attention" of Brady et al. (ICML 2023), the 'AE' row of
the PSA paper's Table 2: the same encoder and additive decoder as the slot models, but the K
slots are read off the whole image by an MLP, so nothing ties a slot to a set of tokens. Any
object-wise split comes from the additive decoder's alpha masks alone.

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim · h, w grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from probslot.layers import as_int_tuple
from probslot.nn.layers import Draw, prepare_grouping_inputs
from probslot.typing import SlotAttentionOutput
from probslot.validation import check_positive_int

__all__ = ["FlatSlots"]


class FlatSlots(nn.Module):
    """K slots from an MLP on the whole token grid (the AE baseline, Brady et al. 2023).

    ``forward(inputs (b, n, dim), num_slots=None, mask=None) -> SlotAttentionOutput`` with slots
    (b, k, slot_dim) and attn (b, k, n) = 1/K on every real token (0 on masked ones): no token
    belongs to any slot more than to another, so the segmentation is the decoder's masks.

    z = LayerNorm(inputs) on the square token grid h = w = √n → adaptive average pooling to
    (pool, pool) (masked tokens left out of the averages) → flatten (b, dim·pool²) → MLP
    [Linear → LeakyReLU] per ``hidden`` width → Linear to K·slot_dim → (b, K, slot_dim).

    K is part of the last layer, so it is fixed at construction: a call with another
    ``num_slots`` is a ValueError. The slots have no random initialisation, so ``draw`` is
    accepted (the grouping contract) and has no effect.

    Args:
        num_slots: K.
        dim: input feature size D.
        slot_dim: slot size d (default ``dim``).
        pool: side of the pooled grid (the token grid must be at least that large).
        hidden: widths of the MLP's hidden layers.
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        slot_dim: int | None = None,
        pool: int = 4,
        hidden: Sequence[int] = (256, 256),
    ) -> None:
        super().__init__()
        self.num_slots = check_positive_int("num_slots", num_slots)
        self.dim = check_positive_int("dim", dim)
        self.slot_dim = check_positive_int("slot_dim", dim if slot_dim is None else slot_dim)
        self.pool = check_positive_int("pool", pool)
        widths = as_int_tuple(hidden, "hidden")
        self.norm_inputs = nn.LayerNorm(self.dim)
        layers: list[nn.Module] = []
        width = self.dim * self.pool**2
        for w in widths:
            layers += [nn.Linear(width, w), nn.LeakyReLU()]
            width = w
        layers.append(nn.Linear(width, self.num_slots * self.slot_dim))
        self.mlp = nn.Sequential(*layers)

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, dim={self.dim}, slot_dim={self.slot_dim}, "
            f"pool={self.pool}"
        )

    def _grid_side(self, n: int) -> int:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"the AE baseline pools a square token grid (h = w = √n); got n = {n} tokens, "
                "which is not a square. Use square images (image_size H = W) with this grouping"
            )
        if side < self.pool:
            raise ValueError(
                f"the token grid ({side}×{side}) is smaller than the pooled grid "
                f"({self.pool}×{self.pool}); set pool <= {side} in grouping_kwargs"
            )
        return side

    def forward(
        self,
        inputs: Tensor,
        num_slots: int | None = None,
        mask: Tensor | None = None,
        *,
        draw: Draw = None,
    ) -> SlotAttentionOutput:
        """inputs (b, n, dim), mask (b, n) bool or None → `SlotAttentionOutput` over K slots."""
        if num_slots is not None and num_slots != self.num_slots:
            raise ValueError(
                f"the AE baseline decodes a fixed number of slots (its MLP outputs "
                f"K·slot_dim = {self.num_slots}·{self.slot_dim}); got num_slots={num_slots!r}. "
                f"Call it with num_slots=None or {self.num_slots}, or build it with that K"
            )
        inputs = prepare_grouping_inputs(inputs, self.dim, mask)  # padded tokens zeroed
        b, n, _ = inputs.shape
        side = self._grid_side(n)
        z = self.norm_inputs(inputs)  # (b, n, dim)
        grid = z.transpose(1, 2).reshape(b, self.dim, side, side)  # row-major tokens
        if mask is None:
            pooled = F.adaptive_avg_pool2d(grid, self.pool)  # (b, dim, pool, pool)
        else:
            # the mean over the real tokens of each cell (a cell of padding only: 0)
            real = mask.to(z.dtype).reshape(b, 1, side, side)
            grid = grid * real  # LayerNorm of a zeroed token is its bias: zero it again
            share = F.adaptive_avg_pool2d(real, self.pool)  # (b, 1, pool, pool)
            pooled = F.adaptive_avg_pool2d(grid, self.pool) / share.clamp_min(1e-12)
        slots = self.mlp(pooled.flatten(1)).reshape(b, self.num_slots, self.slot_dim)
        attn = z.new_full((b, self.num_slots, n), 1.0 / self.num_slots)  # (b, k, n)
        if mask is not None:
            attn = attn * mask.unsqueeze(1).to(attn.dtype)
        return SlotAttentionOutput(slots=slots, attn=attn)
