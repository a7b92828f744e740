"""Non-additive transformer decoder: learned patch queries cross-attend to all slots."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from probslot.decoders.common import check_slots, check_transformer
from probslot.layers import as_hw
from probslot.typing import DecoderOutput
from probslot.validation import check_positive_int

__all__ = ["TransformerDecoder"]


class TransformerDecoder(nn.Module):
    """Slots → image with a stack of pre-norm transformer decoder layers (non-additive).

    One learned query per ``patch_size`` × ``patch_size`` patch (P = H/p · W/p queries of width
    ``dim``). Each layer: self-attention among patch queries, cross-attention from queries to the
    slots (projected Linear(d → dim)), MLP. A final LayerNorm + Linear(dim → 3·p·p) gives the
    patch pixels, which are tiled into the image. Pruned slots are masked out of the cross-
    attention (key padding), so the output equals decoding only the kept slots.

    forward(slots (b, k, d), keep (b, k) bool | None) → DecoderOutput(recon (b, 3, H, W), None, None).
    """

    def __init__(
        self,
        slot_dim: int,
        image_size: int | Sequence[int],
        patch_size: int = 4,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: int = 2,
    ) -> None:
        super().__init__()
        self.slot_dim = check_positive_int("slot_dim", slot_dim)
        self.image_size = as_hw(image_size, "image_size")
        self.patch_size = check_positive_int("patch_size", patch_size)
        check_transformer(dim, depth, heads, mlp_ratio)
        h, w = self.image_size
        if h % patch_size or w % patch_size:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by patch_size {patch_size}; "
                "pick a patch size that divides both sides"
            )
        self.grid = (h // patch_size, w // patch_size)
        self.queries = nn.Parameter(0.02 * torch.randn(self.grid[0] * self.grid[1], dim))
        self.slot_proj = nn.Linear(slot_dim, dim)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                dim,
                heads,
                dim_feedforward=dim * mlp_ratio,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.to_pixels = nn.Linear(dim, 3 * patch_size * patch_size)

    def forward(self, slots: Tensor, keep: Tensor | None = None) -> DecoderOutput:
        check_slots(slots, keep, self.slot_dim)
        b = slots.shape[0]
        memory = self.slot_proj(slots)  # (b, k, dim)
        padding = None if keep is None else ~keep  # True = ignore this slot
        x = self.queries.unsqueeze(0).expand(b, -1, -1)  # (b, P, dim)
        for layer in self.layers:
            x = layer(x, memory, memory_key_padding_mask=padding)
        patches = self.to_pixels(self.norm(x))  # (b, P, 3·p·p)
        p = self.patch_size
        recon = rearrange(
            patches, "b (gh gw) (c ph pw) -> b c (gh ph) (gw pw)", gh=self.grid[0], ph=p, pw=p, c=3
        )
        return DecoderOutput(recon=recon, masks=None, per_slot=None)
