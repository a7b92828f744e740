"""Build PSA from the flat options of a config's ``grouping_kwargs`` in tests.

`flat_psa(num_slots, dim, variant=..., prune_tau=..., coord_dims=...)` goes through the registry
factories (`probslot.nn.GROUPINGS`), the one place that maps flat options to the core and its
parts, so tests written against the options exercise the same path as a config.
"""

from __future__ import annotations

from typing import Any

from probslot.nn import ProbabilisticSlotAttention, build_grouping


def flat_psa(
    num_slots: int,
    dim: int,
    slot_dim: int | None = None,
    iters: int = 3,
    *,
    variant: str = "proj",
    **options: Any,
) -> ProbabilisticSlotAttention:
    """``variant`` "proj" → grouping 'psa-proj', "base" → 'psa', "exact" → 'psa' without W_q."""
    if variant == "exact":
        options["query_proj"] = False
    name = "psa-proj" if variant == "proj" else "psa"
    module = build_grouping(name, num_slots, dim, slot_dim=slot_dim, iters=iters, **options)
    assert isinstance(module, ProbabilisticSlotAttention)
    return module
