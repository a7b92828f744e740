"""Grouping modules: Probabilistic Slot Attention, Slot Attention, their parts and their registry.

`GROUPINGS` maps names to factories with explicit signatures (so a config's grouping options
are checked by name when it is read, see `probslot.models.ModelConfig`):

========== ===========================================================================
sa         `SlotAttention` (Locatello et al. 2020) → `SlotAttentionOutput`
psa        `ProbabilisticSlotAttention(variant="base")`, Alg. 2 (``query_proj=False``: the
           authors' base code, variant ``"exact"``); `PositionalPSA` with ``coord_dims`` > 0
psa-proj   `ProbabilisticSlotAttention(variant="proj")`, Alg. 1/3; the authors' PSA-Proj
           code corresponds to ``gru=True, mlp=True, norm_slots=True``
========== ===========================================================================

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
from probslot.nn.functional import DEFAULT_MIN_VAR, EMStep, em_step
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
    "GROUPINGS",
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


@GROUPINGS.register("psa")
def build_psa(
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
    """Alg. 2 (keys = values = z) with the options beyond the paper as parts (module docstring).

    ``query_proj=False`` drops W_q (variant ``"exact"``, the authors' base code);
    ``coord_dims`` > 0 builds `PositionalPSA` (positions in the mixture).
    """
    variant = "base" if check_bool("query_proj", query_proj) else "exact"
    core = _core_options(
        slot_dim if slot_dim is not None else dim, iters, variant, variance, init, min_var, gru, mlp,
        norm_slots, mlp_hidden, temperature, prune_tau, prune_start, merge_dist, merge_start,
        standardize,
    )  # fmt: skip
    if coord_dims == 0:  # coord_weight has no effect without positions (checked all the same)
        check_float("coord_weight", coord_weight, low=0.0, high=1.0)
        module = ProbabilisticSlotAttention(num_slots, dim, slot_dim, iters, **core)
    else:
        module = PositionalPSA(
            num_slots,
            dim,
            slot_dim,
            iters,
            coord_dims=coord_dims,
            coord_weight=coord_weight,
            **core,
        )
    if proj_init != "em":
        module.init_projections(proj_init)
    return module


@GROUPINGS.register("psa-proj")
def build_psa_proj(
    num_slots: int,
    dim: int,
    slot_dim: int | None = None,
    iters: int = 3,
    *,
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
) -> ProbabilisticSlotAttention:
    """Alg. 1/3 (key, value and query projections) with the options beyond the paper as parts.

    ``coord_dims`` exists only to say that positions in the mixture need the base 'psa'.
    """
    if coord_dims != 0:
        raise ValueError(
            f"coord_dims={coord_dims!r} (positions in the mixture) needs variant='base' (the 'psa' "
            "grouping), whose slots live in token space, so their last entries stay positions; "
            "got grouping 'psa-proj'"
        )
    core = _core_options(
        slot_dim if slot_dim is not None else dim, iters, "proj", variance, init, min_var, gru, mlp,
        norm_slots, mlp_hidden, temperature, prune_tau, prune_start, merge_dist, merge_start,
        standardize,
    )  # fmt: skip
    module = ProbabilisticSlotAttention(num_slots, dim, slot_dim, iters, **core)
    if proj_init != "em":
        module.init_projections(proj_init)
    return module


def _core_options(
    slot_dim: int,
    iters: int,
    variant: str,
    variance: str,
    init: str,
    min_var: float,
    gru: bool,
    mlp: bool,
    norm_slots: bool,
    mlp_hidden: int | None,
    temperature: float,
    prune_tau: float,
    prune_start: int,
    merge_dist: float,
    merge_start: int | None,
    standardize: bool,
) -> dict[str, object]:
    """The core's keyword arguments for the flat options of a config (see the module docstring)."""
    iters = check_positive_int("iters", iters)
    flags = [
        check_bool(name, v) for name, v in (("gru", gru), ("mlp", mlp), ("norm_slots", norm_slots))
    ]
    # mlp_hidden without mlp has no effect (as in probslot 0.1.0, whose configs must still load)
    hidden = mlp_hidden if mlp else None
    refine = SlotRefinement(slot_dim, gru, mlp, norm_slots, hidden) if any(flags) else None
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
    return {"variant": variant, "variance": variance, "init": init, "min_var": min_var,
            "refine": refine, "extensions": parts}  # fmt: skip


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
