"""Options beyond the paper's EM, as composable parts of `ProbabilisticSlotAttention`.

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim.

The paper's EM (Alg. 1/2/3) is the core's ``forward``; everything else arrives as an
`EMExtension`, a small module with one contract:

* ``check(psa)``: validate the settings against the module it serves (e.g. an iteration number
  against ``psa.iters``), at construction and for every per-call list; raise ValueError/TypeError.
* ``before_em(state) -> state``: once per call, after the tokens are projected and centred and the
  slots initialised, before the first iteration (e.g. a token transform).
* ``after_iteration(t, state) -> state``: after the M-step of iteration t = 1 … T (e.g. ARD).
* ``after_em(state) -> state``: once, after the last iteration, in reverse order of the list
  (e.g. the inverse of a token transform).

Each hook returns a new `EMState` (frozen, `dataclasses.replace`); the default hooks return the
state unchanged. Extensions hold settings only (no parameters), so a model's state dict does not
depend on them, and a per-call list (``psa(tokens, extensions=...)``, built by `with_settings`)
replaces the module's own for one call: that is how schedules (a τ ramp in training) and the
pruning analysis change a setting without writing into a live module.

The parts here: `Standardize` (EM on per-image standardised tokens), `TemperedEStep`
(deterministic annealing), `MomentMerge` (merging coinciding slots) and `ARDPrune`
(automatic relevance determination inside EM, Eq. 7). Positions in the mixture change the input
norm and the E-step's likelihood, so they are a subclass of the core
(`probslot.nn.positions.PositionalPSA`), not an extension.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from probslot.nn.functional import token_mean
from probslot.relevance import relevant
from probslot.validation import check_float, check_int, check_iteration, check_tau

if TYPE_CHECKING:
    from probslot.nn.psa import ProbabilisticSlotAttention

__all__ = [
    "ARDPrune",
    "EMExtension",
    "EMState",
    "MomentMerge",
    "Standardize",
    "TemperedEStep",
    "find_extension",
    "merge_slots",
    "prune_weights",
    "with_settings",
]


@dataclass(frozen=True)
class EMState:
    """Everything one EM iteration reads and writes, for one forward call.

    Attributes:
        keys:      (b, n, d_k) tokens the E-step scores (W_k z, or z).
        values:    (b, n, d) tokens the M-step averages (W_v z, or z), centred by ``shift``.
        mask:      (b, n) bool, True = real token, or None.
        shift:     (b, 1, d) where the slot means live relative to ``values``: μ = M-step mean
                   + shift (the per-image token mean, detached; 0 once a transform took over).
        mu, var:   (b, k, d) slot means and diagonal variances.
        log_pi:    (b, k) log mixing weights used by the next E-step.
        pi:        (b, k) mixing weights (1/K before the first iteration).
        attn:      (b, k, n) responsibilities of the last E-step (None before the first).
        keys_sq, values_sq: keys² and values² (b, n, ·), computed once by the core after
                   ``before_em`` (None before), constants for every iteration.
        shared_tokens: keys and values are the same tokens z (variants ``base`` and ``exact``).
        temperature: the E-step temperature T of this call (1 = the paper).
        iters, min_var, coord_dims: the module's T, variance floor and position features.
        memo:      per-call data an extension keeps from ``before_em`` to ``after_em``, under
                   its own key (e.g. `Standardize`'s scale).
    """

    keys: Tensor
    values: Tensor
    mask: Tensor | None
    shift: Tensor
    mu: Tensor
    var: Tensor
    log_pi: Tensor
    pi: Tensor
    iters: int
    min_var: float
    attn: Tensor | None = None
    keys_sq: Tensor | None = None
    values_sq: Tensor | None = None
    shared_tokens: bool = False
    temperature: float = 1.0
    coord_dims: int = 0
    memo: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> EMState:
        """A copy with the given fields changed."""
        return dataclasses.replace(self, **changes)


class EMExtension(nn.Module):
    """Base class of the parts that extend PSA's EM (see the module docstring for the contract).

    Subclasses set ``order`` (where `with_settings` places them: token transforms first, then
    E-step changes, then per-iteration steps) and ``removes_slots`` (True when the part can set
    a slot's π to 0, so that the decoder skips it).
    """

    order: ClassVar[int] = 50
    removes_slots: ClassVar[bool] = False

    def check(self, psa: ProbabilisticSlotAttention) -> None:
        """Raise ValueError/TypeError if this part cannot serve `psa` (default: always fits)."""

    def before_em(self, state: EMState) -> EMState:
        return state

    def after_iteration(self, t: int, state: EMState) -> EMState:
        return state

    def after_em(self, state: EMState) -> EMState:
        return state


class Standardize(EMExtension):
    """EM on per-image standardised tokens (beyond the paper; a token transform and its inverse).

    Before EM, each image's values (and keys) are scaled per feature to unit variance over its
    real tokens (statistics without gradient; values are already centred by the core), and the
    slot means iterate in those coordinates; after EM, μ and σ² are mapped back. A diagonal
    Gaussian mixture is equivariant to such per-feature affine maps, so only what is not — the
    slot init, ``min_var`` and the query projection — sees the difference: they work at the
    scale of the image's own token spread, however much the encoder shrinks or grows it in
    training. Without it, training can shrink the token spread far below the init's σ(0) = 1
    and EM then puts every token into one broad component (docs/training.md).
    """

    order = 0

    def before_em(self, state: EMState) -> EMState:
        mask = state.mask
        scale = _token_scale(state.values, mask)  # (b, 1, d)
        values = state.values / scale
        if state.shared_tokens:
            keys = values  # keys = values = z: the same standardised tokens
        else:
            keys = state.keys - token_mean(state.keys, mask).detach()
            keys = keys / _token_scale(keys, mask)
        memo = {**state.memo, "standardize": (scale, state.shift)}
        # μ iterates in standardised coordinates: no shift until `after_em` maps it back
        return state.replace(
            keys=keys, values=values, shift=torch.zeros_like(state.shift), memo=memo
        )

    def after_em(self, state: EMState) -> EMState:
        scale, shift = state.memo["standardize"]
        return state.replace(mu=state.mu * scale + shift, var=state.var * scale.square())


class TemperedEStep(EMExtension):
    """Tempered E-step A_nk ∝ (π_k N(k_n; m_k, σ_k²))^{1/T} (deterministic annealing, Ueda &
    Nakano 1998; beyond the paper, whose EM is T = 1).

    T > 1 softens the responsibilities, which keeps one slot from claiming every token early in
    training. A call's ``temperature`` argument (a training anneal) wins over this setting.
    """

    order = 10

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = check_float("temperature", temperature, low=0.0, low_open=True)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"

    def before_em(self, state: EMState) -> EMState:
        return state.replace(temperature=self.temperature)


class MomentMerge(EMExtension):
    """Merging inside EM (beyond the paper): slots whose appearance Gaussians nearly coincide
    become one moment-matched slot, after iterations ``start`` … T.

    The distance of slots i, j is the mean over appearance features (all but the last
    ``coord_dims``) of (μ_i − μ_j)² / (σ_i² + σ_j²). Groups form by complete linkage, greedily in
    decreasing π: a slot joins a group only if it is within ``dist`` of every member, so a broad
    slot lying near two distinct ones cannot chain them together. The group's slot with the
    largest π takes the others' weight and the group's moment-matched mean and variance; the
    others get π = 0 and, like pruned slots, claim no tokens afterwards and are not decoded. Two
    pieces of one plain background are such a pair, so the background keeps one slot and
    Eq. 7 can count.

    Args:
        dist: merge below this distance (> 0).
        start: first iteration after which slots merge; None = after the last one only (early
            iterations must not merge: every slot starts near the others with a broad variance,
            and all would become one).
    """

    order = 20
    removes_slots = True

    def __init__(self, dist: float, start: int | None = None) -> None:
        super().__init__()
        self.dist = check_float("merge_dist", dist, low=0.0, low_open=True)
        self.start = None if start is None else check_int("merge_start", start, low=1)

    def extra_repr(self) -> str:
        return f"dist={self.dist:g}" + ("" if self.start is None else f", start={self.start}")

    def check(self, psa: ProbabilisticSlotAttention) -> None:
        if self.start is not None:
            check_iteration("merge_start", self.start, psa.iters)

    def after_iteration(self, t: int, state: EMState) -> EMState:
        if t < (state.iters if self.start is None else self.start):
            return state
        app_dims = state.mu.shape[-1] - state.coord_dims
        mu, var, pi = merge_slots(state.mu, state.var, state.pi, self.dist, app_dims, state.min_var)
        return state.replace(mu=mu, var=var, pi=pi)


class ARDPrune(EMExtension):
    """Automatic relevance determination inside EM (paper Eq. 7 applied after iterations
    ``start`` … T instead of once at the end; beyond the paper).

    After such an iteration, the slots that are not relevant (`probslot.relevance.relevant`:
    π ≤ τ, each image keeping at least its largest slot) get π = 0 and the rest are renormalised,
    so a pruned slot claims no tokens in later iterations and is not decoded. A later ``start``
    lets every slot settle on its tokens before its weight is judged; ``start = T − 1`` prunes
    once the mixture has converged and lets the survivors take the pruned slots' tokens in one
    last iteration.

    Args:
        tau: relevance threshold τ in (0, 1).
        start: first iteration (1-based) after which slots are pruned.
    """

    order = 30
    removes_slots = True

    def __init__(self, tau: float, start: int = 1) -> None:
        super().__init__()
        self.tau = check_tau(tau, "prune_tau")
        if self.tau == 0.0:
            raise ValueError(
                "prune_tau must be > 0 for ARD inside EM (0 = no pruning: leave ARDPrune out)"
            )
        self.start = check_int("prune_start", start, low=1)

    def extra_repr(self) -> str:
        return f"tau={self.tau:g}" + ("" if self.start == 1 else f", start={self.start}")

    def check(self, psa: ProbabilisticSlotAttention) -> None:
        check_iteration("prune_start", self.start, psa.iters)

    def after_iteration(self, t: int, state: EMState) -> EMState:
        if t < self.start:
            return state
        return state.replace(pi=prune_weights(state.pi, self.tau))


# --------------------------------------------------------------------------- per-call settings
def find_extension(extensions: Iterable[EMExtension], kind: type[EMExtension]) -> Any:
    """The first extension of type `kind` in `extensions`, or None."""
    return next((e for e in extensions if isinstance(e, kind)), None)


_UNSET: Any = object()


def with_settings(
    extensions: Sequence[EMExtension],
    *,
    prune_tau: float | None = None,
    prune_start: int | None = None,
    merge_dist: float | None = None,
) -> tuple[EMExtension, ...]:
    """The extensions of one call with some settings replaced (None keeps a setting as it is).

    ``prune_tau`` replaces `ARDPrune`'s τ (0 removes ARD; > 0 adds it when absent, from
    ``prune_start`` or iteration 1); ``prune_start`` its start. ``merge_dist`` replaces
    `MomentMerge`'s distance (0 removes merging; > 0 adds it after the last iteration when
    absent). New parts are built through their
    constructors, so every value is checked; the result is ordered by each part's ``order``.
    """
    out = [e for e in extensions if not isinstance(e, (ARDPrune, MomentMerge))]
    ard: ARDPrune | None = find_extension(extensions, ARDPrune)
    merge: MomentMerge | None = find_extension(extensions, MomentMerge)
    tau = (ard.tau if ard else 0.0) if prune_tau is None else check_tau(prune_tau, "prune_tau")
    if tau > 0:
        start = (ard.start if ard else 1) if prune_start is None else prune_start
        out.append(
            ard
            if ard is not None and (tau, start) == (ard.tau, ard.start)
            else ARDPrune(tau, start)
        )
    dist = (merge.dist if merge else 0.0) if merge_dist is None else merge_dist
    dist = check_float("merge_dist", dist, low=0.0, hint="0 = off")
    if dist > 0:
        out.append(
            merge
            if merge is not None and merge.dist == dist
            else MomentMerge(dist, merge.start if merge else None)
        )
    return tuple(sorted(out, key=lambda e: e.order))


# --------------------------------------------------------------------------- the maths
def _token_scale(x: Tensor, mask: Tensor | None) -> Tensor:
    """(b, 1, d) per-feature standard deviation of already-centred x (b, n, d) over real tokens,
    without gradient, floored so constant features stay finite."""
    return token_mean(x.detach().square(), mask).add(1e-6).sqrt()


def prune_weights(pi: Tensor, tau: float) -> Tensor:
    """(b, k) π with the slots that are not relevant at τ (`probslot.relevance.relevant`) set to
    0 and the rest renormalised per image (see `ARDPrune`)."""
    pruned = pi * relevant(pi, tau)
    return pruned / pruned.sum(-1, keepdim=True)


def merge_slots(
    mu: Tensor, var: Tensor, pi: Tensor, dist: float, app_dims: int, min_var: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge live slots whose appearance Gaussians nearly coincide (see `MomentMerge`).

    mu, var (b, k, d), pi (b, k); the first `app_dims` features are compared. Each group's first
    slot in decreasing π, its root, gets the group's total π and its moment-matched mean and
    variance (floored at `min_var`); the others π = 0. Returns new (mu, var, pi).
    """
    b, k, d = mu.shape
    app_mu, app_var = mu[..., :app_dims], var[..., :app_dims]
    diff2 = (app_mu[:, :, None] - app_mu[:, None]).square()  # (b, k, k, a)
    dij = (diff2 / (app_var[:, :, None] + app_var[:, None])).mean(-1)  # (b, k, k)
    alive = pi > 0
    close = (dij < dist) & alive[:, :, None] & alive[:, None, :]
    if not bool((close.sum(-1) > 1).any()):  # every live slot is only close to itself
        return mu, var, pi
    rows = torch.arange(b, device=pi.device)
    slots = torch.arange(k, device=pi.device)
    target = slots.expand(b, k).clone()  # (b, k) root of each slot
    placed = torch.zeros_like(alive)  # (b, k) slots already in a group
    for j in pi.argsort(-1, descending=True).unbind(-1):  # (b,) the next slot of each image
        # (b, k roots) members of each group that are not close to j
        far = placed & ~close[rows, j]
        conflicts = torch.zeros_like(pi).scatter_add(1, target, far.to(pi.dtype))
        is_root = placed & (target == slots)
        fits = is_root & (conflicts == 0) & alive[rows, j, None]
        score = torch.where(fits, pi, torch.full_like(pi, -1.0))
        target[rows, j] = torch.where(fits.any(-1), score.argmax(-1), j)
        placed[rows, j] = alive[rows, j]
    w = pi.unsqueeze(-1)  # (b, k, 1)
    index = target.unsqueeze(-1).expand(b, k, d)
    new_pi = torch.zeros_like(pi).scatter_add(1, target, pi)
    m1 = torch.zeros_like(mu).scatter_add(1, index, w * mu)
    m2 = torch.zeros_like(mu).scatter_add(1, index, w * (var + mu.square()))
    root = (new_pi > 0).unsqueeze(-1)
    safe = new_pi.clamp_min(torch.finfo(pi.dtype).tiny).unsqueeze(-1)
    new_mu = torch.where(root, m1 / safe, mu)
    new_var = torch.where(root, (m2 / safe - new_mu.square()).clamp_min(min_var), var)
    return new_mu, new_var, new_pi
