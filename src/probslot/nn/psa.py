"""Probabilistic Slot Attention (Kori et al., NeurIPS 2024, Algorithms 1–3).

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from probslot.nn.functional import DEFAULT_MIN_VAR, em_step, token_mean
from probslot.nn.layers import (
    ResidualMLP,
    check_float,
    check_iteration,
    check_positive_int,
    prepare_grouping_inputs,
    resolve_num_slots,
)
from probslot.typing import SlotPosterior, check_tau

__all__ = ["ProbabilisticSlotAttention"]

Variant = Literal["proj", "base"]
Variance = Literal["mle", "map"]
Init = Literal["learned", "standard"]
ProjInit = Literal["em", "torch"]


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")


class ProbabilisticSlotAttention(nn.Module):
    """Probabilistic Slot Attention: T EM iterations of a per-image diagonal GMM over tokens.

    ``forward(inputs (b, n, dim), num_slots=None, mask=None) -> SlotPosterior`` with
    mu/var (b, k, slot_dim), pi (b, k), attn (b, k, n).

    Pipeline: z = LayerNorm(inputs) (the input LayerNorm of slot attention, over the feature axis;
    it puts tokens on a unit scale so `min_var` and the init are meaningful); then

    * ``variant="proj"`` (Alg. 1 = Alg. 3, "PSA-Proj"): keys W_k z, values W_v z (both
      dim → slot_dim, no bias), query means W_q μ(t) (slot_dim → slot_dim, no bias);
    * ``variant="base"`` (Alg. 2, "PSA"): keys = values = z (so slot_dim must equal dim); the
      printed algorithm keeps the query projection W_q μ(t), which is the default here
      (``query_proj=True``). The authors' code has no W_q at all: pass ``query_proj=False``
      to match it (then the E-step scores z against μ(t) itself, exact EM on z).

    Each iteration calls `probslot.nn.functional.em_step` (E-step over slots in log space, Â over
    tokens, μ and σ² on the values, π = Σ_n A / N). Work that does not change across iterations
    is done once per forward: the values are centred by their (detached) per-image mean, and
    keys², values² are computed once and passed to every `em_step` call. Both are exact
    re-arrangements (tested against plain `em_step`). EM runs in float32 under autocast.
    Initialisation, π(0) = 1/K always:

    * ``init="learned"`` (authors' code): μ(0) = m + exp(log s)·ε, ε ~ N(0, I), σ(0)² = exp(2 log s)
      with learned m, log s ∈ R^{slot_dim} shared by all slots (so any ``num_slots`` works). Both
      get gradients: m through μ(0); log s through the noise scale and through σ(0)² in the first
      E-step. They start at m = 0, log s = 0, i.e. exactly the paper's standard init.
    * ``init="standard"`` (paper Eq. 3): μ(0) ~ N(0, I), σ(0)² = 1, no parameters.

    Options beyond the paper, all off by default (the paper's algorithms have none of them):

    * ``variance="map"``: the prior-regularised variance update of the authors' code (paper
      notes §11.2), see `em_step`; ``"mle"`` is Alg. 1.
    * ``gru=True``: μ(t+1) = GRUCell(μ_EM, μ(t)); ``mlp=True``: μ += MLP(LayerNorm(μ)); and
      ``norm_slots=True``: W_q LayerNorm(μ(t)). These are the authors' PSA-Proj refinements; σ²
      and π still come from the EM step (around the EM mean, before the GRU/MLP).
    * ``min_var``: variance floor (see `probslot.nn.functional.DEFAULT_MIN_VAR`).
    * ``proj_init="em"`` (default): W_q = I and W_v = W_k (orthogonal), so the untrained module
      is exact EM on W_k z (paper App. E); ``"torch"`` keeps PyTorch's Linear init, which makes
      the first E-steps collapse onto one slot (see `_init_projections_as_em`).
    * ``temperature``: tempered E-step (π N)^{1/T} (deterministic annealing); 1 is the paper.
    * ``prune_tau``: ARD inside EM: after every iteration, slots with π < prune_tau get π = 0
      (the largest slot is always kept) and the rest are renormalised, so a pruned slot claims
      no tokens in later iterations. 0 (default) is the paper's algorithm. ``prune_start`` s
      (1-based, default 1) delays it: ARD applies after iterations s, …, T only, so the first
      s − 1 iterations are plain EM and every slot can settle on its tokens before its weight
      is judged; s = T − 1 prunes once the mixture has converged and lets the survivors take the
      pruned slots' tokens in one last iteration.
    * ``merge_dist``: merging inside EM, after iterations ``merge_start``, …, T (default: after
      the last one only; early iterations must not merge, since every slot starts near the
      others with a broad variance and all would become one): after such an iteration,
      slots whose Gaussians nearly coincide in appearance — mean over the appearance features
      (all but the last ``coord_dims``) of (μ_i − μ_j)² / (σ_i² + σ_j²) below ``merge_dist`` —
      become one. Groups form by complete linkage, greedily in decreasing π (a slot joins a
      group only if it is within ``merge_dist`` of every member, so a broad slot lying near two
      distinct ones cannot chain them together): the slot with the largest π takes the others'
      weight, and its mean and variance are the moment-matched ones of the group; the others
      get π = 0 and, like pruned slots, claim no tokens afterwards and are not decoded. Two
      pieces of one plain background are such a pair (with positions in the mixture only their
      positions differ), so the background keeps one slot and Eq. 7 can count. 0 (default) is
      the paper's algorithm.
    * ``standardize``: run EM on each image's keys and values standardised per feature (zero
      mean, unit variance over the image's real tokens; statistics without gradient) and map μ,
      σ² back afterwards. A diagonal-Gaussian mixture is equivariant to such per-feature affine
      maps, so only what is not — the slot init, ``min_var`` and the query projection — sees the
      difference: they now work at the scale of the image's own token spread, however much the
      encoder shrinks or grows it during training. Without it, training can shrink the
      token spread far below the init's σ(0) = 1, and EM then puts every token into one
      broad component (see docs/training.md). False (default) is the paper's algorithm.
    * ``coord_dims`` (base variant): the last ``coord_dims`` token features are the token's
      image-plane position (an encoder built with the same ``coord_dims`` appends them). They skip
      the input LayerNorm (which would mix them with the appearance features), so each slot's
      Gaussian covers appearance and position: the last ``coord_dims`` entries of μ are exactly the
      responsibility-weighted centre of the slot's tokens and those of σ² its spatial spread.
      0 (default) is the paper's algorithm. ``coord_weight`` w ∈ [0, 1] is the power of the
      positions' likelihood in the E-step, A_nk ∝ π_k N(appearance) N(position)^w, a power
      likelihood on those features alone (the M-step is unchanged): 1 (default) is plain EM on
      all features; w < 1 lets one slot cover a wide region (a background) at a smaller cost
      against slots that each take a compact piece of it, since a Gaussian over positions fits
      a uniform spread poorly; 0 keeps the positions out of the E-step (tokens grouped by
      appearance alone, as invariant slot attention computes slot positions), and the M-step
      still gives every slot its centre and spread.

    Args:
        num_slots: default number of slots K (override per call with ``forward(num_slots=...)``).
        dim: feature size D of the input tokens.
        slot_dim: slot size d (default ``dim``); must equal ``dim`` for ``variant="base"``.
        iters: number of EM iterations T ≥ 1.
        mlp_hidden: hidden width of the residual MLP (default 2·slot_dim).
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        slot_dim: int | None = None,
        iters: int = 3,
        variant: Variant = "proj",
        variance: Variance = "mle",
        gru: bool = False,
        mlp: bool = False,
        init: Init = "learned",
        min_var: float = DEFAULT_MIN_VAR,
        query_proj: bool = True,
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
    ) -> None:
        super().__init__()
        self.num_slots = check_positive_int("num_slots", num_slots)
        self.dim = check_positive_int("dim", dim)
        self.slot_dim = check_positive_int("slot_dim", dim if slot_dim is None else slot_dim)
        self.iters = check_positive_int("iters", iters)
        _check_choice("variant", variant, ("proj", "base"))
        _check_choice("variance", variance, ("mle", "map"))
        _check_choice("init", init, ("learned", "standard"))
        _check_choice("proj_init", proj_init, ("em", "torch"))
        self.temperature = check_float(
            "temperature", temperature, "a positive float", low=0.0, low_open=True
        )
        self.prune_tau = check_tau(prune_tau)
        self.prune_start = check_iteration("prune_start", prune_start, self.iters)
        self.merge_dist = check_float("merge_dist", merge_dist, "a float >= 0 (0 = off)", low=0.0)
        self.merge_start = check_iteration(
            "merge_start", self.iters if merge_start is None else merge_start, self.iters
        )
        self.standardize = bool(standardize)
        self.min_var = check_float("min_var", min_var, "a positive float", low=0.0, low_open=True)
        if variant == "base" and self.slot_dim != self.dim:
            raise ValueError(
                f"variant='base' (Alg. 2) has no key/value projections, so slot_dim must equal "
                f"dim={self.dim}; got slot_dim={self.slot_dim}. Use variant='proj' to change size."
            )
        if isinstance(coord_dims, bool) or not isinstance(coord_dims, int) or coord_dims < 0:
            raise ValueError(f"coord_dims must be a non-negative int; got {coord_dims!r}")
        if coord_dims and variant != "base":
            raise ValueError(
                f"coord_dims={coord_dims} needs variant='base' (the 'psa' grouping), whose slots live "
                "in token space, so their last entries stay positions; got variant='proj'"
            )
        if coord_dims >= self.dim:
            raise ValueError(
                f"coord_dims must be smaller than dim={self.dim} to leave appearance features; "
                f"got {coord_dims}"
            )
        self.coord_dims = coord_dims
        self.coord_weight = check_float(
            "coord_weight", coord_weight, "a float in [0, 1]", low=0.0, high=1.0
        )
        self.variant: Variant = variant
        self.variance: Variance = variance
        self.init: Init = init

        d = self.slot_dim
        self.norm_inputs = nn.LayerNorm(self.dim - coord_dims)
        self.to_k: nn.Module = nn.Identity()
        self.to_v: nn.Module = nn.Identity()
        if variant == "proj":
            self.to_k = nn.Linear(self.dim, d, bias=False)
            self.to_v = nn.Linear(self.dim, d, bias=False)
        self.norm_slots: nn.Module = nn.LayerNorm(d) if norm_slots else nn.Identity()
        self.to_q: nn.Module = nn.Linear(d, d, bias=False) if query_proj else nn.Identity()
        self.proj_init: ProjInit = proj_init
        if proj_init == "em":
            self._init_projections_as_em()
        self.gru: nn.GRUCell | None = nn.GRUCell(d, d) if gru else None
        self.mlp: ResidualMLP | None = None
        if mlp:
            hidden = check_positive_int("mlp_hidden", 2 * d if mlp_hidden is None else mlp_hidden)
            self.mlp = ResidualMLP(d, hidden)
        if init == "learned":
            self.init_loc = nn.Parameter(torch.zeros(d))
            self.init_log_scale = nn.Parameter(torch.zeros(d))
        else:
            self.register_parameter("init_loc", None)
            self.register_parameter("init_log_scale", None)

    @torch.no_grad()
    def _init_projections_as_em(self) -> None:
        """W_q = I and W_v = W_k (orthogonal): the untrained module is exact EM on W_k z.

        Paper App. E: the E-step scores keys against W_q μ while μ and σ² live in value space, so
        "for EM to have an exact solution, this transformation needs to be the identity". With
        PyTorch's default Linear init W_q shrinks every query towards the origin (by ~1/√3 per
        dimension), so the first E-step hands nearly all tokens to the slot nearest the origin,
        π collapses onto it, and the other slots never recover. Starting from the exact-EM point
        lets every slot claim a cluster from the first step; training then moves W_q, W_k, W_v
        freely. Measured on clustered tokens at init: FG-ARI 0.92 (this) vs 0.19 (torch init).
        """
        if isinstance(self.to_q, nn.Linear):
            nn.init.eye_(self.to_q.weight)
        if isinstance(self.to_k, nn.Linear) and isinstance(self.to_v, nn.Linear):
            nn.init.orthogonal_(self.to_k.weight)
            self.to_v.weight.copy_(self.to_k.weight)

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, dim={self.dim}, slot_dim={self.slot_dim}, "
            f"iters={self.iters}, variant={self.variant!r}, variance={self.variance!r}, "
            f"init={self.init!r}, min_var={self.min_var:g}"
        )

    def initial_state(
        self, batch: int, num_slots: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(μ(0) (b, k, d), σ(0)² (b, k, d), log π(0) (b, k)) for one forward call."""
        shape = (batch, num_slots, self.slot_dim)
        eps = torch.randn(shape, device=device, dtype=dtype)
        if self.init_loc is not None and self.init_log_scale is not None:
            mu = self.init_loc + self.init_log_scale.exp() * eps
            var = (2.0 * self.init_log_scale).exp().expand(shape)
        else:
            mu = eps
            var = torch.ones(shape, device=device, dtype=dtype)
        log_pi = torch.full((batch, num_slots), -math.log(num_slots), device=device, dtype=dtype)
        return mu, var, log_pi

    def forward(
        self, inputs: Tensor, num_slots: int | None = None, mask: Tensor | None = None
    ) -> SlotPosterior:
        """inputs (b, n, dim), mask (b, n) bool or None → `SlotPosterior` over k slots."""
        k = resolve_num_slots(self.num_slots, num_slots)
        inputs = prepare_grouping_inputs(inputs, self.dim, mask)  # padded tokens zeroed
        b = inputs.shape[0]

        if self.coord_dims:  # positions skip the LayerNorm
            c = self.coord_dims
            z = torch.cat([self.norm_inputs(inputs[..., :-c]), inputs[..., -c:]], dim=-1)
        else:
            z = self.norm_inputs(inputs)  # (b, n, dim)
        keys, values = self.to_k(z), self.to_v(z)  # (b, n, d) each
        # centre the values once per forward (the shift em_step would otherwise apply on every
        # iteration, see em_step's `center`); exact: the slot means are shifted back below and
        # σ², π do not depend on the shift, hence it is detached
        shift = token_mean(values, mask).detach()  # (b, 1, d)
        values = values - shift
        scale: Tensor | None = None
        out_shift = shift  # where the slot means are mapped back to after the last iteration
        if self.standardize:
            # EM in per-image standardised coordinates (each feature: zero mean, unit variance
            # over the image's real tokens); μ, σ² are mapped back after the last iteration
            scale = _token_scale(values, mask)  # (b, 1, d)
            values = values / scale
            if self.variant == "base":
                keys = values  # keys = values = z: the same standardised tokens
            else:
                keys = keys - token_mean(keys, mask).detach()
                keys = keys / _token_scale(keys, mask)
            shift = torch.zeros_like(shift)  # μ iterates in standardised coordinates
        # squares are iteration-invariant: computed once (float32, no graph) for all T calls
        dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        values_sq = values.detach().to(dtype).square()  # (b, n, d)
        keys_sq = values_sq if keys is values else keys.detach().to(dtype).square()  # (b, n, d)
        param_dtype = self.init_loc.dtype if self.init_loc is not None else inputs.dtype
        mu, var, log_pi = self.initial_state(b, k, inputs.device, param_dtype)

        c, w = self.coord_dims, self.coord_weight
        scored = self.slot_dim  # features the E-step scores (all but E-step-free positions)
        if c and w == 0.0:
            scored -= c
            keys, keys_sq = keys[..., :scored], keys_sq[..., :scored]
        step = None
        for it in range(1, self.iters + 1):
            query = self.to_q(self.norm_slots(mu))  # (b, k, d) in key space
            var_e, log_pi_e = var[..., :scored], log_pi
            if c and 0.0 < w < 1.0:
                # N(x; m, σ²)^w = N(x; m, σ²/w) · (σ²)^{(1−w)/2} · const: the power likelihood
                # is the E-step with the positions' variance divided by w, plus a per-slot term
                # that joins log π (both are tempered alike)
                pos_var = var[..., -c:].clamp_min(self.min_var)  # (b, k, c)
                var_e = torch.cat([var[..., :-c], pos_var / w], dim=-1)
                log_pi_e = log_pi + 0.5 * (1.0 - w) * pos_var.log().sum(-1)
            step = em_step(
                keys,
                values,
                query[..., :scored],
                var_e,
                log_pi_e,
                mask,
                min_var=self.min_var,
                variance=self.variance,
                prev_mu=mu - shift if self.variance == "map" else None,
                center=False,
                keys_sq=keys_sq,
                values_sq=values_sq,
                temperature=self.temperature,
            )
            new_mu = step.mu + shift
            if self.gru is not None:
                new_mu = self.gru(
                    new_mu.reshape(b * k, self.slot_dim), mu.reshape(b * k, self.slot_dim)
                ).reshape(b, k, self.slot_dim)  # (b*k, d) -> (b, k, d)
            if self.mlp is not None:
                new_mu = self.mlp(new_mu)
            mu, var, pi = new_mu, step.var, step.pi
            if self.merge_dist > 0 and it >= self.merge_start:
                mu, var, pi = _merge_slots(
                    mu, var, pi, self.merge_dist, self.slot_dim - c, self.min_var
                )
            if self.prune_tau > 0 and it >= self.prune_start:
                pi = _prune_weights(pi, self.prune_tau)
            # clamp so a dead slot (π = 0) gives a finite log and a finite gradient
            log_pi = pi.clamp_min(torch.finfo(pi.dtype).tiny).log()
        assert step is not None  # iters >= 1
        if scale is not None:
            mu, var = mu * scale + out_shift, var * scale.square()
        return SlotPosterior(mu=mu, var=var, pi=pi, attn=step.attn)


def _token_scale(x: Tensor, mask: Tensor | None) -> Tensor:
    """(b, 1, d) per-feature standard deviation of already-centred x (b, n, d) over real tokens,
    without gradient, floored so constant features stay finite."""
    return token_mean(x.detach().square(), mask).add(1e-6).sqrt()


def _prune_weights(pi: Tensor, tau: float) -> Tensor:
    """(b, k) π with entries below τ set to 0 (never the largest one), renormalised per image."""
    top = pi.argmax(-1, keepdim=True)  # (b, 1)
    keep = (pi >= tau).scatter(-1, top, True)
    pruned = pi * keep
    return pruned / pruned.sum(-1, keepdim=True)


def _merge_slots(
    mu: Tensor, var: Tensor, pi: Tensor, dist: float, app_dims: int, min_var: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Merge live slots whose appearance Gaussians nearly coincide (see ``merge_dist``).

    mu, var (b, k, d), pi (b, k). Complete linkage, greedy in decreasing π: each live slot joins
    the group of largest π *all* of whose members lie within `dist` of it, else starts a group of
    its own (so a broad slot near two distinct ones cannot chain them together). Each group's
    first slot, its root, gets the group's total π and its moment-matched mean and variance; the
    others π = 0.
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
