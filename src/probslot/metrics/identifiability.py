"""Slot identifiability metrics: SMCC (paper Eq. 12), slot R², SIS and compositional contrast.

Conventions shared by SMCC, slot R² and SIS (see ``docs/metrics.md``):

* ``slots_a`` is the **target** and ``slots_b`` the **predictor**: maps are fitted b → a, and
  predictions are correlated with (or scored against) the held-out *targets* ``a``. (The authors'
  code correlates the prediction with its own input; we do not.)
* Per-image Hungarian matching of ``slots_b`` to ``slots_a`` by Euclidean distance between slot
  vectors (the authors' cost), unless a precomputed ``perm`` is passed (e.g. from mask IoU with
  `probslot.metrics.match_masks`). Euclidean matching needs equal slot dimensions.
* Images are split once into train / held-out parts with a seeded shuffle (``seed=None`` keeps
  the first ``train_fraction`` as train, like the authors' code). Maps are fitted on the train
  split after standardising each dimension with train-split statistics, and scored on the
  held-out split.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from scipy.stats import rankdata
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from probslot.metrics.matching import (
    MatchCost,
    _check_slot_pair,
    hungarian,
    match_slots,
    match_slots_mapped,
    permute_slots,
)
from probslot.metrics.regression import (
    KRRConfig,
    Transform,
    fit_predict,
    r2_per_problem,
    standardize,
)
from probslot.validation import check_choice, check_float

__all__ = [
    "SISResult",
    "SMCCResult",
    "SlotR2Result",
    "compositional_contrast",
    "sis",
    "slot_r2",
    "slot_r2_details",
    "smcc",
    "smcc_details",
]

Correlation = Literal["pearson", "spearman"]
MatchSpace = Literal["mapped", "raw"]


@dataclass(frozen=True)
class SMCCResult:
    """Details of one SMCC evaluation.

    Attributes:
        score: the SMCC, mean of ``per_dim`` (in [-1, 1]; [0, 1] with ``match_dims``).
        per_slot: (k,) mean correlation per (target) slot index.
        per_dim: (k, d_a) correlation per slot index and target dimension (|ρ| of the matched
            prediction dimension when ``match_dims``).
        perm: (m, k) slot matching, ``perm[i, a]`` = slot of ``slots_b`` matched to slot ``a``.
        dim_perm: (k, d_a) matched prediction dimension per target dimension, or None.
        transform, correlation: the options used.
        n_train, n_eval: images in the fit split and in the scored split.
        chance: SMCC of the same pipeline on a null pair (``slots_b`` shuffled across images, so
            independent of ``slots_a`` with the same marginals), or None if not computed.
            Per-image matching alone makes unrelated slots correlate (about 0.1 for k=7, d=64;
            about 0.3 for d ≤ 8), so this is the score's floor.
        adjusted: chance-adjusted SMCC (score − chance) / (1 − chance): 1 for a perfect match,
            about 0 for independent slots; None if not computed.
    """

    score: float
    per_slot: Tensor
    per_dim: Tensor
    perm: Tensor
    dim_perm: Tensor | None
    transform: str
    correlation: str
    n_train: int
    n_eval: int
    chance: float | None = None
    adjusted: float | None = None


@dataclass(frozen=True)
class SlotR2Result:
    """Details of one slot-R² evaluation.

    Attributes:
        score: mean of ``per_slot``.
        per_slot: (k,) held-out R² per slot index (sklearn `r2_score`, uniform average over dims).
        perm: (m, k) slot matching used.
        n_train, n_eval: images in the fit split and in the scored split.
    """

    score: float
    per_slot: Tensor
    perm: Tensor
    n_train: int
    n_eval: int


@dataclass(frozen=True)
class SISResult:
    """Details of one slot identifiability score (Brady et al. 2023; definition in `sis`).

    Attributes:
        score: mean over ground-truth slots of the normalised (or plain) R² gap.
        r2_matched: (k,) held-out R² of ground-truth slot a from its matched inferred slot.
        r2_other: (k,) best held-out R² of ground-truth slot a from any other inferred slot.
        perm: (m, k) slot matching used.
    """

    score: float
    r2_matched: Tensor
    r2_other: Tensor
    perm: Tensor


def min_images(min_train: int, train_fraction: float = 0.8) -> int:
    """Fewest images whose train split (⌊m·f⌋) holds `min_train` and held-out split at least 2."""
    train_fraction = check_float(
        "train_fraction", train_fraction, low=0.0, high=1.0, low_open=True, high_open=True
    )
    m = min_train + 2
    while (
        int(math.floor(m * train_fraction)) < min_train
        or m - int(math.floor(m * train_fraction)) < 2
    ):
        m += 1
    return m


def train_eval_split(
    m: int, train_fraction: float, seed: int | None, min_train: int, what: str
) -> tuple[Tensor, Tensor]:
    """(train, held-out) image indices: a seeded permutation cut at ⌊m·train_fraction⌋.

    Raises a ValueError naming `what` and the fewest images that work (`min_images`) when the
    train split would hold fewer than `min_train` images or the held-out split fewer than 2.
    """
    need = min_images(min_train, train_fraction)
    n_train = int(math.floor(m * train_fraction))
    if m < need:
        raise ValueError(
            f"{what} needs at least {need} images (a train split of ≥ {min_train} and a held-out "
            f"split of ≥ 2 at train_fraction={train_fraction}); got m={m} images. "
            "Evaluate on more images or change train_fraction."
        )
    if seed is None:
        order = torch.arange(m)
    else:
        order = torch.randperm(m, generator=torch.Generator().manual_seed(seed))
    return order[:n_train], order[n_train:]


def _check_options(transform: str, correlation: str | None = None) -> None:
    check_choice("transform", transform, ("none", "affine", "krr"))
    if correlation is not None:
        check_choice("correlation", correlation, ("pearson", "spearman"))


def _min_train(transform: str, d_b: int) -> int:
    # An affine fit with fewer than d_b + 2 points interpolates the train split exactly.
    return d_b + 2 if transform == "affine" else 2


def _matched(
    slots_a: Tensor,
    slots_b: Tensor,
    perm: Tensor | None,
    match_space: MatchSpace,
    cost: MatchCost,
    train_idx: Tensor | None,
    refine_iters: int,
) -> tuple[Tensor, Tensor]:
    """Return (perm (m, k), slots_b reordered to match slots_a)."""
    if perm is not None:
        if perm.shape != slots_a.shape[:2]:
            raise ValueError(
                f"perm must have shape (m, k) = {tuple(slots_a.shape[:2])}; got {tuple(perm.shape)}"
            )
        k = slots_a.shape[1]
        sorted_perm = perm.sort(-1).values.cpu().long()
        if not torch.equal(sorted_perm, torch.arange(k).expand_as(sorted_perm)):
            raise ValueError("perm must hold a permutation of 0..k-1 in every row")
    elif slots_a.shape[1] == 1:
        # one slot per image: the only permutation is the identity (no fit, no Hungarian loop)
        perm = torch.zeros(slots_a.shape[:2], dtype=torch.long)
    elif match_space == "raw":
        _check_slot_pair(slots_a, slots_b, same_dim=True)
        perm = match_slots(slots_a, slots_b, cost).perm
    elif match_space == "mapped":
        perm = match_slots_mapped(slots_a, slots_b, train_idx, refine_iters).perm
    else:
        raise ValueError(f"match_space must be 'mapped' or 'raw'; got {match_space!r}")
    return perm, permute_slots(slots_b, perm)


def _fit_map(
    transform: Transform,
    a: Tensor,
    b: Tensor,
    train_idx: Tensor,
    eval_idx: Tensor,
    *,
    do_standardize: bool,
    map_per_slot: bool,
    krr: KRRConfig | None,
) -> tuple[Tensor, Tensor]:
    """Fit b → a per slot on the train split; return (targets, predictions), both (k, n_eval, d_a).

    a, b: (k, m, d) float64, slot index first.
    """
    k, n_ev = len(a), len(eval_idx)
    a_tr, a_ev = a[:, train_idx], a[:, eval_idx]
    b_tr, b_ev = b[:, train_idx], b[:, eval_idx]
    if not map_per_slot:  # one problem over all slots: (1, k·n, d); standardised jointly too
        a_tr, a_ev, b_tr, b_ev = (x.reshape(1, -1, x.shape[-1]) for x in (a_tr, a_ev, b_tr, b_ev))
    if do_standardize:
        a_tr, a_ev = standardize(a_tr, a_ev)
        b_tr, b_ev = standardize(b_tr, b_ev)
    pred = fit_predict(transform, b_tr, a_tr, b_ev, krr)
    return a_ev.reshape(k, n_ev, -1), pred.reshape(k, n_ev, -1)


def _rank(x: Tensor) -> Tensor:
    """Average ranks along axis 1 (ties share their mean rank, as scipy `rankdata`)."""
    return torch.from_numpy(rankdata(x.cpu().numpy(), axis=1)).to(x)


def _corr_matrix(target: Tensor, pred: Tensor, full: bool) -> Tensor:
    """Pearson correlation between columns over axis 1 of (k, n, p) and (k, n, q) tensors.

    Returns (k, p, q) when ``full`` else the diagonal (k, p). A constant column correlates 0.
    """
    t = target - target.mean(1, keepdim=True)
    p = pred - pred.mean(1, keepdim=True)
    tn, pn = t.norm(dim=1), p.norm(dim=1)  # (k, p), (k, q)
    t = t / torch.where(tn > 0, tn, torch.ones_like(tn)).unsqueeze(1)
    p = p / torch.where(pn > 0, pn, torch.ones_like(pn)).unsqueeze(1)
    if full:
        return (t.transpose(1, 2) @ p).clamp(-1.0, 1.0)
    return (t * p).sum(1).clamp(-1.0, 1.0)


def smcc_details(
    slots_a: Tensor,
    slots_b: Tensor,
    transform: Transform = "affine",
    correlation: Correlation = "pearson",
    match_dims: bool = False,
    train_fraction: float = 0.8,
    *,
    perm: Tensor | None = None,
    match_space: MatchSpace | None = None,
    match_cost: MatchCost = "euclidean",
    refine_iters: int = 1,
    map_per_slot: bool = True,
    standardize_slots: bool = True,
    seed: int | None = 0,
    krr: KRRConfig | None = None,
    chance: bool = False,
) -> SMCCResult:
    """Slot mean correlation coefficient with its per-slot and per-dimension parts (paper Eq. 12):

        SMCC(s, s̃) = 1/(K·d) Σ_k Σ_j ρ(s_kj, [A s̃_π(k)]_j)

    Args:
        slots_a: (m, k, d_a) target slots (ground truth, or run A).
        slots_b: (m, k, d_b) slots of the other run; ``d_b != d_a`` only with a fitted map
            (``transform`` ≠ ``none``) and ``match_space='mapped'`` or a precomputed ``perm``.
        transform: map A fitted b → a on the train split: ``affine`` (least squares; the paper's
            statement, the default), ``krr`` (RBF kernel ridge, the authors' code) or ``none``
            (raw matched slots; then every image is scored).
        correlation: ``pearson`` (default) or ``spearman`` (Pearson on average ranks).
        match_dims: also Hungarian-match dimensions per slot on |ρ| and score |ρ| (the authors'
            code); default False scores the signed ρ of dimension j with dimension j (Eq. 12).
        train_fraction: share of images used to fit the map.
        perm: optional (m, k) precomputed matching (see `probslot.metrics.matching`).
        match_space: ``mapped`` (default with a fitted map: affine-invariant matching, see
            `match_slots_mapped`) or ``raw`` (Euclidean on raw slots, the authors' code; default
            for ``transform='none'``).
        match_cost: cost for ``raw`` matching.
        refine_iters: refit-and-rematch rounds of ``mapped`` matching.
        map_per_slot: fit one map per slot index (authors' code, default) or one map shared by
            all slots (Def. 3's single affine map; uses k× more points).
        standardize_slots: standardise dims with train statistics before fitting (authors' code).
        seed: seed of the train/held-out shuffle; None keeps image order (first part is train).
        krr: kernel ridge settings for ``transform='krr'``.
        chance: also score a null pair (``slots_b`` shuffled across images) and report
            ``chance`` and ``adjusted`` (doubles the cost).
    """
    _check_options(transform, correlation)
    _check_slot_pair(slots_a, slots_b, same_dim=transform == "none" or match_dims)
    args = (slots_a, transform, correlation, match_dims, train_fraction)
    opts = dict(
        match_space=match_space,
        match_cost=match_cost,
        refine_iters=refine_iters,
        map_per_slot=map_per_slot,
        standardize_slots=standardize_slots,
        seed=seed,
        krr=krr,
    )
    result = _smcc_core(*args, slots_b, perm=perm, **opts)
    if not chance:
        return result
    gen = torch.Generator().manual_seed(0 if seed is None else seed + 1)
    shuffled = slots_b[torch.randperm(slots_b.shape[0], generator=gen).to(slots_b.device)]
    null = _smcc_core(*args, shuffled, perm=None, **opts).score
    adjusted = (result.score - null) / max(1.0 - null, 1e-12)
    return dataclasses.replace(result, chance=null, adjusted=adjusted)


def _smcc_core(
    slots_a: Tensor,
    transform: Transform,
    correlation: Correlation,
    match_dims: bool,
    train_fraction: float,
    slots_b: Tensor,
    *,
    perm: Tensor | None,
    match_space: MatchSpace | None,
    match_cost: MatchCost,
    refine_iters: int,
    map_per_slot: bool,
    standardize_slots: bool,
    seed: int | None,
    krr: KRRConfig | None,
) -> SMCCResult:
    m = slots_a.shape[0]
    space = match_space or ("raw" if transform == "none" else "mapped")
    d_b = slots_b.shape[-1]
    if transform == "none":
        if m < 2:
            raise ValueError(f"smcc needs at least 2 images; got m={m}")
        tr = ev = None
        if space == "mapped" and perm is None:
            tr, _ = train_eval_split(m, train_fraction, seed, d_b + 2, "smcc matching")
    else:
        min_train = max(
            _min_train(transform, d_b), d_b + 2 if space == "mapped" and perm is None else 0
        )
        tr, ev = train_eval_split(
            m, train_fraction, seed, min_train, f"smcc(transform={transform!r})"
        )
    perm, b_matched = _matched(slots_a, slots_b, perm, space, match_cost, tr, refine_iters)
    a = slots_a.detach().double().transpose(0, 1)  # (k, m, d_a)
    b = b_matched.detach().double().transpose(0, 1)  # (k, m, d_b)
    if transform == "none":
        target, pred, n_train, n_eval = a, b, 0, m
    else:
        target, pred = _fit_map(
            transform,
            a,
            b,
            tr,
            ev,
            do_standardize=standardize_slots,
            map_per_slot=map_per_slot,
            krr=krr,
        )
        n_train, n_eval = len(tr), len(ev)
    if correlation == "spearman":
        target, pred = _rank(target), _rank(pred)
    dim_perm = None
    if match_dims:
        rho = _corr_matrix(target, pred, full=True).abs()  # (k, d, d)
        dim_perm = hungarian(rho, maximize=True)
        per_dim = torch.gather(rho, 2, dim_perm.unsqueeze(-1)).squeeze(-1)
    else:
        per_dim = _corr_matrix(target, pred, full=False)
    return SMCCResult(
        score=float(per_dim.mean()),
        per_slot=per_dim.mean(-1),
        per_dim=per_dim,
        perm=perm,
        dim_perm=dim_perm,
        transform=transform,
        correlation=correlation,
        n_train=n_train,
        n_eval=n_eval,
    )


def smcc(
    slots_a: Tensor,
    slots_b: Tensor,
    transform: Transform = "affine",
    correlation: Correlation = "pearson",
    match_dims: bool = False,
    train_fraction: float = 0.8,
    adjust_for_chance: bool = False,
    **options,
) -> float:
    """SMCC of ``slots_b`` (m, k, d_b) against target ``slots_a`` (m, k, d_a) (paper Eq. 12).

    1 means ``slots_b`` equals ``slots_a`` up to a per-image slot permutation and the fitted map.
    Unrelated slots score above 0 because matching itself aligns them (see
    `SMCCResult.chance`); ``adjust_for_chance=True`` returns the chance-adjusted score, about 0
    for unrelated slots. Options and conventions as in `smcc_details`.
    """
    result = smcc_details(
        slots_a,
        slots_b,
        transform,
        correlation,
        match_dims,
        train_fraction,
        chance=adjust_for_chance,
        **options,
    )
    return result.adjusted if adjust_for_chance else result.score


def slot_r2_details(
    slots_a: Tensor,
    slots_b: Tensor,
    train_fraction: float = 0.8,
    *,
    transform: Literal["affine", "krr"] = "krr",
    perm: Tensor | None = None,
    match_space: MatchSpace = "mapped",
    match_cost: MatchCost = "euclidean",
    refine_iters: int = 1,
    map_per_slot: bool = True,
    standardize_slots: bool = True,
    seed: int | None = 0,
    krr: KRRConfig | None = None,
) -> SlotR2Result:
    """Slot-averaged R² of predicting target slots ``slots_a`` (m, k, d_a) from matched
    ``slots_b`` (m, k, d_b) with RBF kernel ridge (α = 1, γ = 1/d_b; Nyström above
    ``krr.exact_max`` train images), fitted on the train split and scored on the held-out split.

    ``transform='affine'`` gives the linear R² instead. Other options as in `smcc_details`.
    """
    check_choice("slot_r2 transform", transform, ("affine", "krr"))
    _check_slot_pair(slots_a, slots_b, same_dim=False)
    m, d_b = slots_a.shape[0], slots_b.shape[-1]
    min_train = max(
        _min_train(transform, d_b), d_b + 2 if match_space == "mapped" and perm is None else 0
    )
    tr, ev = train_eval_split(
        m, train_fraction, seed, min_train, f"slot_r2(transform={transform!r})"
    )
    perm, b_matched = _matched(slots_a, slots_b, perm, match_space, match_cost, tr, refine_iters)
    a = slots_a.detach().double().transpose(0, 1)
    b = b_matched.detach().double().transpose(0, 1)
    target, pred = _fit_map(
        transform,
        a,
        b,
        tr,
        ev,
        do_standardize=standardize_slots,
        map_per_slot=map_per_slot,
        krr=krr,
    )
    per_slot = r2_per_problem(target, pred)
    return SlotR2Result(
        score=float(per_slot.mean()), per_slot=per_slot, perm=perm, n_train=len(tr), n_eval=len(ev)
    )


def slot_r2(slots_a: Tensor, slots_b: Tensor, train_fraction: float = 0.8, **options) -> float:
    """Slot-averaged held-out R² of kernel ridge from matched ``slots_b`` to ``slots_a``
    (both (m, k, d)); see `slot_r2_details`."""
    return slot_r2_details(slots_a, slots_b, train_fraction, **options).score


def sis(
    latents: Tensor,
    slots: Tensor,
    train_fraction: float = 0.8,
    *,
    perm: Tensor | None = None,
    transform: Literal["affine", "krr"] = "krr",
    normalize: bool = True,
    match_space: MatchSpace = "mapped",
    match_cost: MatchCost = "euclidean",
    refine_iters: int = 1,
    seed: int | None = 0,
    krr: KRRConfig | None = None,
) -> SISResult:
    """Slot identifiability score (after Brady et al. 2023), as defined here:

    After matching (``perm``: inferred slot matched to ground-truth slot a), fit a map from the
    matched inferred slot to ground-truth slot a and take its held-out R², r_a. Also fit a map to
    ground-truth slot a from each *other* matched inferred slot j ≠ a of the same image, and take
    the best, o_a = max_j R²(z_a ← ŝ_j), floored at 0. Then

        SIS = mean_a (r_a − o_a) / (1 − o_a)      (``normalize=True``, default)
        SIS = mean_a (r_a − o_a)                  (``normalize=False``)

    so 1 means each slot predicts its own object perfectly, and 0 means it predicts it no better
    than another object's slot does (information shared across slots, e.g. a global scene code).
    It fits k² maps, so it costs about k times `slot_r2`.

    Args:
        latents: (m, k, f) ground-truth per-object latents (or another run's slots).
        slots: (m, k, d) inferred slots (d may differ from f).
        perm: optional (m, k) matching, e.g. from `match_masks` on object vs slot masks.
    """
    check_choice("sis transform", transform, ("affine", "krr"))
    _check_slot_pair(latents, slots, same_dim=False)
    (m, k), d = latents.shape[:2], slots.shape[-1]
    min_train = max(
        _min_train(transform, d), d + 2 if match_space == "mapped" and perm is None else 0
    )
    tr, ev = train_eval_split(m, train_fraction, seed, min_train, "sis")
    perm, s_matched = _matched(latents, slots, perm, match_space, match_cost, tr, refine_iters)
    z = latents.detach().double().transpose(0, 1)  # (k, m, f)
    s = s_matched.detach().double().transpose(0, 1)  # (k, m, d)
    # Problem a*k + j: predict z_a from s_j; all k² fits batched along the problem axis.
    zz = z.repeat_interleave(k, 0)  # (k*k, m, f)
    ss = s.repeat(k, 1, 1)  # (k*k, m, d)
    target, pred = _fit_map(
        transform, zz, ss, tr, ev, do_standardize=True, map_per_slot=True, krr=krr
    )
    r2 = r2_per_problem(target, pred).reshape(k, k)  # (a, j)
    r_match = r2.diagonal().clone()
    if k > 1:
        off = r2.masked_fill(torch.eye(k, dtype=torch.bool), float("-inf"))
        other = off.max(-1).values.clamp_min(0.0)
    else:
        other = torch.zeros(k, dtype=r2.dtype)
    gap = r_match - other
    if normalize:
        gap = gap / (1.0 - other).clamp_min(1e-12)
    return SISResult(score=float(gap.mean()), r2_matched=r_match, r2_other=other, perm=perm)


def compositional_contrast(
    decoder_fn: Callable[[Tensor], Tensor],
    slots: Tensor,
    mode: Literal["auto", "rev", "fwd"] = "auto",
) -> Tensor:
    """Compositional contrast of a decoder (paper Def. 1, after Brady et al. 2023):

        C_comp(f, s) = Σ_n Σ_k Σ_{j>k} ‖∂f(s)_n/∂s_k‖ ‖∂f(s)_n/∂s_j‖

    computed from the Jacobian with `torch.func` (0 iff no output depends on two slots).

    Args:
        decoder_fn: maps one scene's slots (k, d) to its output (any shape, flattened to n values,
            e.g. 3·H·W pixels). It must be a pure function of its input (no batch statistics).
        slots: (b, k, d) slots, or (k, d) for one scene.
        mode: ``rev`` (`jacrev`, n vector-Jacobian products), ``fwd`` (`jacfwd`, k·d
            Jacobian-vector products) or ``auto`` (``fwd`` when k·d < n).

    Returns:
        (b,) contrast per scene, or a 0-d tensor for (k, d) input.
    """
    if not isinstance(slots, Tensor):
        raise TypeError(f"slots must be a tensor (b, k, d) or (k, d); got {type(slots).__name__}")
    if slots.ndim not in (2, 3):
        raise ValueError(f"slots must have shape (b, k, d) or (k, d); got {tuple(slots.shape)}")
    check_choice("mode", mode, ("auto", "rev", "fwd"))
    single = slots.ndim == 2
    batch = slots.unsqueeze(0) if single else slots
    k, d = batch.shape[1:]

    def flat(s: Tensor) -> Tensor:
        return decoder_fn(s).reshape(-1)

    if mode == "auto":
        n = flat(batch[0].detach()).numel()
        mode = "fwd" if k * d < n else "rev"
    jac_fn = torch.func.jacfwd(flat) if mode == "fwd" else torch.func.jacrev(flat)
    # the fused attention kernels have no forward-mode derivative (transformer decoders); the
    # math kernel computes the same attention and has one
    with warnings.catch_warnings(), sdpa_kernel([SDPBackend.MATH]):
        # torch's first forward-mode AD call loads its JVP decompositions through the
        # deprecated torch.jit.script; that warning is torch-internal and not actionable here.
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        jac = torch.func.vmap(jac_fn)(batch)  # (b, n, k, d)
    g = jac.norm(dim=-1)  # (b, n, k) per-pixel, per-slot gradient norms
    # Σ_{k<j} g_k g_j = ½[(Σ_k g_k)² − Σ_k g_k²]
    contrast = 0.5 * (g.sum(-1).square() - g.square().sum(-1)).sum(-1)
    return contrast[0] if single else contrast
