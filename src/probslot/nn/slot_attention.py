"""Slot Attention baseline (Locatello et al., NeurIPS 2020).

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from probslot.nn.layers import (
    Draw,
    ResidualMLP,
    prepare_grouping_inputs,
    resolve_num_slots,
    slot_noise,
)
from probslot.typing import SlotAttentionOutput
from probslot.validation import check_float, check_positive_int

__all__ = ["SlotAttention"]


class SlotAttention(nn.Module):
    """Slot Attention (Locatello et al. 2020, Alg. 1; paper Eq. 1).

    ``forward(inputs (b, n, dim), num_slots=None, mask=None) -> SlotAttentionOutput`` with
    slots (b, k, slot_dim) and attn (b, k, n).

    z = LayerNorm(inputs); k = W_k z, v = W_v z (dim → slot_dim, no bias). Slots start at
    s(0) = m + exp(log σ)·ε with learned m, log σ shared by all slots (so any ``num_slots`` works).
    For t < T: q = W_q LayerNorm(s); A = softmax over slots of q·k/√d (masked tokens get A = 0);
    Â = (A + ε) / Σ_n (A + ε) over real tokens; s = GRUCell(Â v, s); s += MLP(LayerNorm(s)).
    ``attn`` is A from the last iteration (sums to 1 over k for each real token).

    Args:
        num_slots: default number of slots K (override per call).
        dim: input feature size D.
        slot_dim: slot size d (default ``dim``).
        iters: iterations T ≥ 1.
        mlp_hidden: hidden width of the residual MLP (default 2·slot_dim, 128 for d = 64 as in
            the original paper).
        eps: added to A before the renormalisation over tokens (1e-8 as the original).
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        slot_dim: int | None = None,
        iters: int = 3,
        mlp_hidden: int | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.num_slots = check_positive_int("num_slots", num_slots)
        self.dim = check_positive_int("dim", dim)
        self.slot_dim = check_positive_int("slot_dim", dim if slot_dim is None else slot_dim)
        self.iters = check_positive_int("iters", iters)
        self.eps = check_float("eps", eps, low=0.0)
        d = self.slot_dim
        hidden = check_positive_int("mlp_hidden", 2 * d if mlp_hidden is None else mlp_hidden)

        self.norm_inputs = nn.LayerNorm(self.dim)
        self.to_k = nn.Linear(self.dim, d, bias=False)
        self.to_v = nn.Linear(self.dim, d, bias=False)
        self.norm_slots = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, d, bias=False)
        self.gru = nn.GRUCell(d, d)
        self.mlp = ResidualMLP(d, hidden)
        self.init_loc = nn.Parameter(torch.empty(1, 1, d))
        self.init_log_scale = nn.Parameter(torch.empty(1, 1, d))
        nn.init.xavier_uniform_(self.init_loc)
        nn.init.xavier_uniform_(self.init_log_scale)

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, dim={self.dim}, slot_dim={self.slot_dim}, "
            f"iters={self.iters}" + ("" if self.eps == 1e-8 else f", eps={self.eps:g}")
        )

    def initial_slots(self, batch: int, num_slots: int, draw: Draw = None) -> Tensor:
        """(b, k, d) s(0) = m + exp(log σ)·ε; `draw` picks ε (`probslot.nn.layers.slot_noise`)."""
        shape = (batch, num_slots, self.slot_dim)
        eps = slot_noise(shape, draw, self.training, self.init_loc.device, self.init_loc.dtype)
        return self.init_loc + self.init_log_scale.exp() * eps

    def forward(
        self,
        inputs: Tensor,
        num_slots: int | None = None,
        mask: Tensor | None = None,
        *,
        draw: Draw = None,
    ) -> SlotAttentionOutput:
        """inputs (b, n, dim), mask (b, n) bool or None → `SlotAttentionOutput` over k slots;
        ``draw``: the initial slots' noise (None: random in training, fixed draw 0 in eval)."""
        k = resolve_num_slots(self.num_slots, num_slots)
        inputs = prepare_grouping_inputs(inputs, self.dim, mask)  # padded tokens zeroed
        b, d = inputs.shape[0], self.slot_dim

        z = self.norm_inputs(inputs)  # (b, n, dim)
        keys = self.to_k(z) * (1.0 / math.sqrt(d))  # (b, n, d), scale folded in once
        values = self.to_v(z)  # (b, n, d)
        slots = self.initial_slots(b, k, draw)  # (b, k, d)

        attn = None
        for _ in range(self.iters):
            prev = slots
            q = self.to_q(self.norm_slots(slots))  # (b, k, d)
            logits = torch.bmm(q, keys.transpose(1, 2))  # (b, k, n)
            attn = logits.softmax(dim=1)  # over slots
            weights = attn + self.eps
            if mask is not None:
                keep = mask.unsqueeze(1)  # (b, 1, n)
                attn = attn.masked_fill(~keep, 0.0)
                weights = weights.masked_fill(~keep, 0.0)
            weights = weights / weights.sum(-1, keepdim=True)  # over tokens
            updates = torch.bmm(weights, values)  # (b, k, d)
            slots = self.gru(updates.reshape(b * k, d), prev.reshape(b * k, d)).reshape(b, k, d)
            slots = self.mlp(slots)
        assert attn is not None  # iters >= 1
        return SlotAttentionOutput(slots=slots, attn=attn)
