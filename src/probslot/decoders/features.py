"""Decoders that reconstruct an encoder's tokens instead of pixels (DINOSAUR, Seitzer et al. 2023).

Contract (registry ``FEATURE_DECODERS``): factories take ``slot_dim``, ``grid`` (the encoder's
(h, w) token grid, n = h·w) and ``feature_dim`` (D, the encoder's ``out_dim``) plus their own
options; ``forward(slots (b, k, slot_dim), keep (b, k) bool | None)`` → `FeatureDecoderOutput`
(recon (b, n, D), masks (b, k, n) on the simplex over slots, per_slot (b, k, n, D) | None).
Class attributes: ``additive`` (recon = Σ_k masks · per_slot) and ``autoregressive`` (the decoder
is teacher-forced on the target tokens: ``forward(..., targets=(b, n, D))``).

* `FeatureMLPDecoder` (``feature-mlp``, additive): DINOSAUR's MLP decoder. Every slot is
  broadcast to the n tokens, a learned position embedding is added, a shared MLP gives D
  features and one alpha logit per token; alphas are a softmax over slots.
* `AutoregressiveFeatureDecoder` (``feature-transformer``, non-additive): DINOSAUR's
  autoregressive transformer decoder: token t is predicted from the tokens before it (teacher
  forcing, a BOS token first) with causal self-attention and cross-attention to the slots; the
  masks are the last layer's cross-attention weights (averaged over heads), as DINOSAUR reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probslot.decoders.common import check_slots, check_transformer, pack_kept, unpack_kept
from probslot.layers import as_hw, as_int_tuple, make_activation
from probslot.typing import FeatureDecoderOutput
from probslot.validation import check_positive_int

__all__ = ["AutoregressiveFeatureDecoder", "FeatureMLPDecoder"]


def _check_targets(targets: Tensor, b: int, n: int, d: int) -> None:
    if not isinstance(targets, Tensor) or tuple(targets.shape) != (b, n, d):
        got = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(f"targets must be the encoder's tokens (batch, {n}, {d}); got {got}")


class FeatureMLPDecoder(nn.Module):
    """DINOSAUR's MLP decoder, additive over slots (notes §7; Seitzer et al. 2023, §3.2).

    For slot s_k and token position t: [x̂_kt, α_kt] = MLP(s_k + p_t) with a learned position
    embedding p (n, slot_dim); m_kt = softmax_k(α_kt) and x̂_t = Σ_k m_kt x̂_kt. ``hidden`` are
    the MLP's hidden widths (DINOSAUR: 1024, 1024, 1024), each followed by the activation.
    Slots with ``keep`` False are not computed (mask 0, per-slot tokens 0).

    forward(slots (b, k, slot_dim), keep=None) → FeatureDecoderOutput(recon (b, n, D),
    masks (b, k, n), per_slot (b, k, n, D)).
    """

    additive = True
    autoregressive = False

    def __init__(
        self,
        slot_dim: int,
        grid: int | Sequence[int],
        feature_dim: int,
        hidden: Sequence[int] = (1024, 1024, 1024),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.slot_dim = check_positive_int("slot_dim", slot_dim)
        self.grid = as_hw(grid, "grid")
        self.feature_dim = check_positive_int("feature_dim", feature_dim)
        self.hidden = as_int_tuple(hidden, "hidden")
        make_activation(activation)
        self.num_tokens = n = self.grid[0] * self.grid[1]
        self.pos = nn.Parameter(0.02 * torch.randn(n, slot_dim))
        layers: list[nn.Module] = []
        width = slot_dim
        for h in self.hidden:
            layers += [nn.Linear(width, h), make_activation(activation)]
            width = h
        layers.append(nn.Linear(width, feature_dim + 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, slots: Tensor, keep: Tensor | None = None) -> FeatureDecoderOutput:
        check_slots(slots, keep, self.slot_dim)
        b, k, _ = slots.shape
        packed, index = pack_kept(slots, keep)  # (m, d): only the kept slots are decoded
        # the first layer is affine, W(s + p) + c = (W s + c) + W p: computed for the m slots
        # and the n positions apart, then broadcast (m + n rows instead of m·n)
        first = self.mlp[0]
        hidden = first(packed)[:, None, :] + F.linear(self.pos, first.weight)  # (m, n, h)
        out = self.mlp[1:](hidden)  # (m, n, D + 1)
        per_slot = unpack_kept(out[..., :-1], index, b, k, 0.0)  # (b, k, n, D)
        logits = unpack_kept(out[..., -1], index, b, k, float("-inf"))  # (b, k, n)
        masks = logits.softmax(dim=1)  # over slots
        recon = (masks.unsqueeze(-1) * per_slot).sum(1)  # (b, n, D)
        return FeatureDecoderOutput(recon=recon, masks=masks, per_slot=per_slot)


class _CrossAttentionLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention, cross-attention to the slots, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim)
        )

    def forward(
        self, x: Tensor, memory: Tensor, causal: Tensor, padding: Tensor | None, weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y, attn_mask=causal, need_weights=False)[0]
        y, attn = self.cross_attn(
            self.norm2(x), memory, memory, key_padding_mask=padding, need_weights=weights
        )  # attn (b, n, k), averaged over heads
        x = x + y
        return x + self.mlp(self.norm3(x)), attn


class AutoregressiveFeatureDecoder(nn.Module):
    """DINOSAUR's autoregressive transformer decoder (non-additive; SLATE-style, paper §6).

    Token t is predicted from the slots and the *target* tokens before it: the input sequence is
    [BOS, z_1, …, z_{n−1}] (LayerNorm → Linear(D → dim), plus a learned position embedding),
    then ``depth`` pre-norm layers of causal self-attention, cross-attention to the slots
    (Linear(slot_dim → dim)) and an MLP, then LayerNorm → Linear(dim → D). Training and
    evaluation are teacher-forced (``targets``); without targets the tokens are generated one
    by one (n passes, for `decode` of sampled slots). The masks are the last layer's
    cross-attention weights averaged over heads: (b, k, n), on the simplex over slots. Slots with
    ``keep`` False are masked out of the cross-attention.

    forward(slots (b, k, slot_dim), keep=None, targets (b, n, D) | None) →
    FeatureDecoderOutput(recon (b, n, D), masks (b, k, n), per_slot None).
    """

    additive = False
    autoregressive = True

    def __init__(
        self,
        slot_dim: int,
        grid: int | Sequence[int],
        feature_dim: int,
        dim: int = 768,
        depth: int = 4,
        heads: int = 8,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.slot_dim = check_positive_int("slot_dim", slot_dim)
        self.grid = as_hw(grid, "grid")
        self.feature_dim = check_positive_int("feature_dim", feature_dim)
        check_transformer(dim, depth, heads, mlp_ratio)
        self.num_tokens = n = self.grid[0] * self.grid[1]
        self.bos = nn.Parameter(0.02 * torch.randn(feature_dim))
        self.input_proj = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(n, dim))
        self.slot_proj = nn.Linear(slot_dim, dim)
        self.layers = nn.ModuleList(
            _CrossAttentionLayer(dim, heads, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, feature_dim)
        causal = torch.ones(n, n, dtype=torch.bool).triu(1)  # True = token may not attend
        self.register_buffer("causal", causal, persistent=False)

    def _decode(
        self, inputs: Tensor, memory: Tensor, padding: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """inputs (b, t, D) = [BOS, z_1 … z_{t−1}] → predictions (b, t, D), masks (b, k, t)."""
        t = inputs.shape[1]
        x = self.input_proj(inputs) + self.pos[:t]  # (b, t, dim)
        attn = None
        for i, layer in enumerate(self.layers):
            x, attn = layer(
                x, memory, self.causal[:t, :t], padding, weights=i == len(self.layers) - 1
            )
        assert attn is not None
        return self.out(self.norm(x)), attn.transpose(1, 2)

    def forward(
        self, slots: Tensor, keep: Tensor | None = None, targets: Tensor | None = None
    ) -> FeatureDecoderOutput:
        check_slots(slots, keep, self.slot_dim)
        b = slots.shape[0]
        memory = self.slot_proj(slots)  # (b, k, dim)
        padding = None if keep is None else ~keep  # True = ignore this slot
        bos = self.bos.expand(b, 1, -1)  # (b, 1, D)
        if targets is not None:
            _check_targets(targets, b, self.num_tokens, self.feature_dim)
            inputs = torch.cat([bos, targets[:, :-1].to(bos.dtype)], dim=1)  # shifted right
            recon, masks = self._decode(inputs, memory, padding)
            return FeatureDecoderOutput(recon=recon, masks=masks, per_slot=None)
        inputs = bos
        for _ in range(self.num_tokens):  # greedy generation: feed back each prediction
            recon, masks = self._decode(inputs, memory, padding)
            inputs = torch.cat([bos, recon], dim=1)
        return FeatureDecoderOutput(recon=recon, masks=masks, per_slot=None)
