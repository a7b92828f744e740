"""A learned keep/drop decision per slot around any grouping (AdaSlot, Fan et al., CVPR 2024).

`KeepGate` wraps a grouping module (PSA, SA, the AE baseline): after the inner grouping a small
MLP scores each slot, and its gate g_k ∈ {0, 1} says whether the slot is decoded. The additive
decoder composites with the gates (`probslot.decoders.common.gated_softmax`), so the
reconstruction loss trains the scores through a straight-through Gumbel-sigmoid; the training
loss adds ``penalty · mean(keep_prob)``, the expected share of kept slots, so that slots the
reconstruction does not need are dropped.

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d slot dim.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from probslot.typing import SlotAttentionOutput, SlotPosterior
from probslot.validation import check_float, check_positive_int

__all__ = ["KeepGate", "keep_gate_of", "unwrap_grouping"]


class KeepGate(nn.Module):
    """Keep gates for the slots of an inner grouping (AdaSlot's slot selection, Fan et al. 2024).

    ``forward(inputs (b, n, dim), num_slots=None, mask=None, **grouping_args)`` → the inner
    grouping's output (`SlotPosterior` or `SlotAttentionOutput`) with ``gates`` (b, k) and
    ``keep_prob`` (b, k) filled in; every other field is the inner grouping's, unchanged.

    A keep logit per slot ℓ_k = Linear(ReLU(Linear(LayerNorm(s_k)))) (hidden width ``hidden``) on
    the slots s (PSA: the means μ), and keep_prob p_k = σ(ℓ_k).

    * training: a Gumbel-sigmoid sample y_k = σ((ℓ_k + log u − log(1 − u)) / temperature),
      u ~ U(0, 1) (the two-class Gumbel-softmax of AdaSlot), made hard, h_k = 1[y_k > 0.5], with a
      straight-through gradient: g = h + y − stop_gradient(y) has the value h and the gradient
      of y;
    * eval: the deterministic g_k = 1[p_k > 0.5].

    In both, each image keeps at least its most probable slot (argmax p): an image with no slot
    would have nothing to draw. The additive decoder weighs the slots' alphas by g (masks_k =
    g_k e^{α_k} / Σ_j g_j e^{α_j}); with hard gates this is decoding only the kept slots.

    Args:
        inner: the grouping module (attributes ``num_slots``, ``dim``, ``slot_dim``).
        penalty: weight λ of the sparsity term λ · mean(keep_prob) that the training loss adds
            (`probslot.training.SlotLightningModule`); the module itself does not use it.
        temperature: of the Gumbel-sigmoid in training (> 0; lower = closer to the hard gate).
        hidden: width of the score MLP.
    """

    def __init__(
        self,
        inner: nn.Module,
        penalty: float = 0.1,
        temperature: float = 1.0,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        for attr in ("num_slots", "dim", "slot_dim"):
            if not hasattr(inner, attr):
                raise TypeError(
                    f"KeepGate wraps a grouping module with .num_slots, .dim and .slot_dim; "
                    f"{type(inner).__name__} has no .{attr}"
                )
        if isinstance(inner, KeepGate):
            raise TypeError("KeepGate wraps a grouping module, not another KeepGate")
        self.inner = inner
        self.penalty = check_float("keep_gate.penalty", penalty, low=0.0)
        self.temperature = check_float("keep_gate.temperature", temperature, low=0.0, low_open=True)
        self.hidden = check_positive_int("keep_gate.hidden", hidden)
        d = int(inner.slot_dim)
        self.score = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1)
        )

    @property
    def num_slots(self) -> int:
        return self.inner.num_slots

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def slot_dim(self) -> int:
        return self.inner.slot_dim

    @property
    def coord_dims(self) -> int:
        return getattr(self.inner, "coord_dims", 0)

    def extra_repr(self) -> str:
        return f"penalty={self.penalty:g}, temperature={self.temperature:g}, hidden={self.hidden}"

    def logits(self, slots: Tensor) -> Tensor:
        """(b, k, d) slots → (b, k) keep logits ℓ."""
        return self.score(slots).squeeze(-1)

    def gates(self, logits: Tensor) -> Tensor:
        """(b, k) keep logits → (b, k) gates in {0, 1}: sampled with a straight-through gradient
        in training, 1[σ(ℓ) > 0.5] in eval; each image keeps its most probable slot."""
        logits = logits.float()
        if self.training:
            u = torch.rand_like(logits).clamp(1e-6, 1.0 - 1e-6)
            soft = torch.sigmoid((logits + u.log() - (-u).log1p()) / self.temperature)
            hard = soft.detach() > 0.5
        else:
            soft = None
            hard = logits > 0.0  # σ(ℓ) > 0.5
        top = torch.zeros_like(hard).scatter_(1, logits.argmax(1, keepdim=True), True)
        hard = hard | (top & ~hard.any(1, keepdim=True))  # ≥ 1 slot per image
        gates = hard.to(logits.dtype)
        if soft is None:
            return gates
        return gates + (soft - soft.detach())  # value: the hard gate; gradient: the sample's

    def forward(
        self,
        inputs: Tensor,
        num_slots: int | None = None,
        mask: Tensor | None = None,
        **grouping_args: Any,
    ) -> SlotPosterior | SlotAttentionOutput:
        """inputs (b, n, dim), mask (b, n) bool or None → the inner grouping's output with
        ``gates`` (b, k) and ``keep_prob`` (b, k); ``grouping_args`` go to the inner grouping."""
        out = self.inner(inputs, num_slots=num_slots, mask=mask, **grouping_args)
        logits = self.logits(out.slots)  # (b, k)
        return dataclasses.replace(
            out, gates=self.gates(logits), keep_prob=torch.sigmoid(logits.float())
        )


def unwrap_grouping(module: nn.Module | None) -> nn.Module | None:
    """The grouping inside a `KeepGate` (the module itself for any other grouping): what carries
    PSA's settings (``extensions``, ``iters``) and type."""
    return module.inner if isinstance(module, KeepGate) else module


def keep_gate_of(model: nn.Module) -> KeepGate | None:
    """The `KeepGate` of a slot autoencoder (its ``grouping``), or None when it has none."""
    grouping = getattr(model, "grouping", None)
    return grouping if isinstance(grouping, KeepGate) else None
