"""Grouping modules: Probabilistic Slot Attention, Slot Attention, their parts and their registry.

`GROUPINGS` maps names to factories with explicit signatures (so a config's grouping options
are checked by name when it is read, see `probslot.models.ModelConfig`):

========== ===========================================================================
sa         `SlotAttention` (Locatello et al. 2020) → `SlotAttentionOutput`
psa        `ProbabilisticSlotAttention(variant="base")`, Alg. 2 (``query_proj=False``: the
           authors' base code, variant ``"exact"``); `PositionalPSA` with ``coord_dims`` > 0
psa-proj   `ProbabilisticSlotAttention(variant="proj")`, Alg. 1/3; the authors' PSA-Proj
           code corresponds to ``gru=True, mlp=True, norm_slots=True``
ae         `FlatSlots`: the AE baseline without slot attention (Brady et al. 2023): an MLP
           on the pooled token grid gives the K slots → `SlotAttentionOutput`
========== ===========================================================================

`KeepGate` is a wrapper, not a registry entry: it adds AdaSlot's learned keep gate (Fan et al.
2024) to any of them (``ModelConfig.keep_gate``); `unwrap_grouping` returns the module inside.

The PSA factories take the options of a config's ``grouping_kwargs`` as flat keywords and build
the parts: ``gru``/``mlp``/``norm_slots``/``mlp_hidden`` → `SlotRefinement`; ``standardize`` →
`Standardize`; ``temperature`` → `TemperedEStep`; ``merge_dist``/``merge_start`` →
`MomentMerge`; ``prune_tau``/``prune_start`` → `ARDPrune`; ``coord_dims``/``coord_weight`` →
`PositionalPSA`; ``proj_init`` → `ProbabilisticSlotAttention.init_projections`. Each default is
the paper's algorithm.

Every module exposes ``.num_slots``, ``.dim`` and ``.slot_dim`` and is called as
``module(inputs (b, n, dim), num_slots=None, mask=None)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from torch import nn

from probslot.nn import functional
from probslot.nn.extensions import (
    ARDPrune,
    EMExtension,
    EMState,
    MomentMerge,
    Standardize,
    TemperedEStep,
    with_settings,
)
from probslot.nn.flat import FlatSlots
from probslot.nn.functional import DEFAULT_MIN_VAR, EMStep, em_step
from probslot.nn.keepgate import KeepGate, keep_gate_of, unwrap_grouping
from probslot.nn.positions import PositionalPSA
from probslot.nn.psa import Init, ProbabilisticSlotAttention, ProjInit, Variance
from probslot.nn.refine import SlotRefinement
from probslot.nn.slot_attention import SlotAttention
from probslot.registry import Registry
from probslot.validation import check_bool, check_float, check_iteration, check_positive_int

__all__ = [
    "ARDPrune",
    "DEFAULT_MIN_VAR",
    "EMExtension",
    "EMState",
    "EMStep",
    "FlatSlots",
    "GROUPINGS",
    "KeepGate",
    "MomentMerge",
    "PositionalPSA",
    "ProbabilisticSlotAttention",
    "SlotAttention",
    "SlotRefinement",
    "Standardize",
    "TemperedEStep",
    "build_grouping",
    "em_step",
    "functional",
    "keep_gate_of",
    "unwrap_grouping",
    "with_settings",
]

GROUPINGS: Registry[nn.Module] = Registry("grouping")


@GROUPINGS.register("sa")
def build_sa(
    num_slots: int,
    dim: int,
    slot_dim: int | None = None,
    iters: int = 3,
    mlp_hidden: int | None = None,
    eps: float = 1e-8,
) -> SlotAttention:
    """`SlotAttention` (see its docstring for the options)."""
    return SlotAttention(
        num_slots, dim, slot_dim=slot_dim, iters=iters, mlp_hidden=mlp_hidden, eps=eps
    )


def build_psa(
    projections: bool,
    num_slots: int,
    dim: int,
    slot_dim: int | None = None,
    iters: int = 3,
    *,
    query_proj: bool = True,
    variance: Variance = "mle",
    init: Init = "learned",
    min_var: float = DEFAULT_MIN_VAR,
    gru: bool = False,
    mlp: bool = False,
    norm_slots: bool = False,
    mlp_hidden: int | None = None,
    proj_init: ProjInit = "em",
    temperature: float = 1.0,
    prune_tau: float = 0.0,
    prune_start: int = 1,
    merge_dist: float = 0.0,
    merge_start: int | None = None,
    standardize: bool = False,
    coord_dims: int = 0,
    coord_weight: float = 1.0,
) -> ProbabilisticSlotAttention:
    """PSA from the flat options of a config (the module docstring maps each to its part).

    Registered as ``psa`` (``projections=False``: Alg. 2, keys = values = z; ``query_proj=False``
    drops W_q, variant ``"exact"``, the authors' base code; ``coord_dims`` > 0 builds
    `PositionalPSA`) and ``psa-proj`` (``projections=True``: Alg. 1/3, variant ``"proj"``; its
    slots live in projected space, so ``query_proj`` and positions do not apply).
    """
    iters = check_positive_int("iters", iters)
    if projections:
        variant = "proj"
        for name, value, default in (
            ("query_proj", query_proj, True),
            ("coord_dims", coord_dims, 0),
            ("coord_weight", coord_weight, 1.0),
        ):
            if value != default:
                raise ValueError(
                    f"{name}={value!r} needs the base 'psa' grouping (Alg. 2), whose slots live in "
                    "token space; got grouping 'psa-proj' (Alg. 1/3, key/value/query projections)"
                )
    else:
        variant = "base" if check_bool("query_proj", query_proj) else "exact"
    flags = [check_bool(n, v) for n, v in (("gru", gru), ("mlp", mlp), ("norm_slots", norm_slots))]
    # mlp_hidden without mlp has no effect (as in probslot 0.1.0, whose configs must still load)
    refine = None
    if any(flags):
        d = slot_dim if slot_dim is not None else dim
        refine = SlotRefinement(d, gru, mlp, norm_slots, mlp_hidden if mlp else None)
    parts: list[EMExtension] = []
    if check_bool("standardize", standardize):
        parts.append(Standardize())
    if check_float("temperature", temperature, low=0.0, low_open=True) != 1.0:
        parts.append(TemperedEStep(temperature))
    # a start without its option has no effect; it is range-checked all the same
    if merge_start is not None:
        check_iteration("merge_start", merge_start, iters)
    check_iteration("prune_start", prune_start, iters)
    if check_float("merge_dist", merge_dist, low=0.0, hint="0 = off") > 0:
        parts.append(MomentMerge(merge_dist, merge_start))
    if check_float("prune_tau", prune_tau, low=0.0, high=1.0, high_open=True, hint="0 = off") > 0:
        parts.append(ARDPrune(prune_tau, prune_start))
    # coord_weight has no effect without positions (checked all the same)
    check_float("coord_weight", coord_weight, low=0.0, high=1.0)
    core: dict[str, Any] = dict(
        variant=variant, variance=variance, init=init, min_var=min_var, refine=refine,
        extensions=parts,
    )  # fmt: skip
    if coord_dims == 0:
        module = ProbabilisticSlotAttention(num_slots, dim, slot_dim, iters, **core)
    else:
        positions = {"coord_dims": coord_dims, "coord_weight": coord_weight}
        module = PositionalPSA(num_slots, dim, slot_dim, iters, **positions, **core)
    if proj_init != "em":
        module.init_projections(proj_init)
    return module


GROUPINGS.register("psa")(partial(build_psa, False))
GROUPINGS.register("psa-proj")(partial(build_psa, True))


@GROUPINGS.register("ae")
def build_ae(
    num_slots: int,
    dim: int,
    slot_dim: int | None = None,
    iters: int = 1,
    pool: int = 4,
    hidden: Sequence[int] = (256, 256),
) -> FlatSlots:
    """`FlatSlots`, the AE baseline (see its docstring). It has no iterations: ``iters`` is part
    of the grouping contract (every config passes it) and is checked but has no effect."""
    check_positive_int("iters", iters)
    return FlatSlots(num_slots, dim, slot_dim=slot_dim, pool=pool, hidden=hidden)


def build_grouping(
    name: str,
    num_slots: int,
    dim: int,
    slot_dim: int | None = None,
    iters: int = 3,
    **options: object,
) -> nn.Module:
    """Build the grouping module registered as `name` (see `GROUPINGS.available()`)."""
    return GROUPINGS.build(
        name, num_slots=num_slots, dim=dim, slot_dim=slot_dim, iters=iters, **options
    )
