"""Grouping modules: Probabilistic Slot Attention, Slot Attention and their registry.

`GROUPINGS` maps names to factories ``(num_slots, dim, slot_dim=None, iters=3, **options)``:

========== ===========================================================================
sa         `SlotAttention` (Locatello et al. 2020) → `SlotAttentionOutput`
psa        `ProbabilisticSlotAttention(variant="base")`, Alg. 2 → `SlotPosterior`
psa-proj   `ProbabilisticSlotAttention(variant="proj")`, Alg. 1/3 → `SlotPosterior`;
           the authors' PSA-Proj code corresponds to ``gru=True, mlp=True, norm_slots=True``
========== ===========================================================================

Every module exposes ``.num_slots``, ``.dim`` and ``.slot_dim`` and is called as
``module(inputs (b, n, dim), num_slots=None, mask=None)``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from probslot.nn import functional
from probslot.nn.functional import DEFAULT_MIN_VAR, EMStep, em_step
from probslot.nn.psa import ProbabilisticSlotAttention
from probslot.nn.slot_attention import SlotAttention
from probslot.registry import Registry

__all__ = [
    "DEFAULT_MIN_VAR",
    "GROUPINGS",
    "EMStep",
    "ProbabilisticSlotAttention",
    "SlotAttention",
    "build_grouping",
    "em_step",
    "functional",
]

GROUPINGS: Registry[nn.Module] = Registry("grouping")


def _reject_variant(name: str, options: dict[str, Any]) -> None:
    if "variant" in options:
        raise ValueError(
            f"grouping {name!r} fixes the variant; got variant={options['variant']!r}. "
            "Use 'psa' for Alg. 2 (base) or 'psa-proj' for Alg. 1/3 (proj)."
        )


@GROUPINGS.register("sa")
def _build_sa(
    num_slots: int, dim: int, slot_dim: int | None = None, iters: int = 3, **options: Any
) -> SlotAttention:
    return SlotAttention(num_slots, dim, slot_dim=slot_dim, iters=iters, **options)


@GROUPINGS.register("psa")
def _build_psa(
    num_slots: int, dim: int, slot_dim: int | None = None, iters: int = 3, **options: Any
) -> ProbabilisticSlotAttention:
    _reject_variant("psa", options)
    return ProbabilisticSlotAttention(
        num_slots, dim, slot_dim=slot_dim, iters=iters, variant="base", **options
    )


@GROUPINGS.register("psa-proj")
def _build_psa_proj(
    num_slots: int, dim: int, slot_dim: int | None = None, iters: int = 3, **options: Any
) -> ProbabilisticSlotAttention:
    _reject_variant("psa-proj", options)
    return ProbabilisticSlotAttention(
        num_slots, dim, slot_dim=slot_dim, iters=iters, variant="proj", **options
    )


def build_grouping(
    name: str, num_slots: int, dim: int, slot_dim: int | None = None, iters: int = 3, **options: Any
) -> nn.Module:
    """Build the grouping module registered as `name` (see `GROUPINGS.available()`)."""
    return GROUPINGS.build(
        name, num_slots=num_slots, dim=dim, slot_dim=slot_dim, iters=iters, **options
    )
