"""Probabilistic Slot Attention (Kori et al., NeurIPS 2024, Algorithms 1–3).

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from probslot.nn.extensions import EMExtension, EMState, find_extension
from probslot.nn.functional import DEFAULT_MIN_VAR, em_step, token_mean
from probslot.nn.layers import Draw, prepare_grouping_inputs, resolve_num_slots, slot_noise
from probslot.typing import SlotPosterior
from probslot.validation import check_choice, check_float, check_positive_int

__all__ = ["ProbabilisticSlotAttention"]

Variant = Literal["proj", "base", "exact"]
Variance = Literal["mle", "map"]
Init = Literal["learned", "standard"]
ProjInit = Literal["em", "torch"]

# probslot 0.1.0 kept the refinements on the module itself: old state-dict key → new one
_OLD_KEYS = {"gru.": "refine.gru.", "mlp.": "refine.mlp.", "norm_slots.": "refine.norm_slots."}


class ProbabilisticSlotAttention(nn.Module):
    """Probabilistic Slot Attention: T EM iterations of a per-image diagonal GMM over tokens.

    ``forward(inputs (b, n, dim), num_slots=None, mask=None) -> SlotPosterior`` with mu, var
    (b, k, slot_dim), pi (b, k) and attn (b, k, n). z = LayerNorm(inputs); then each iteration
    is one call of `probslot.nn.functional.em_step` (E-step over slots in log space, M-step for
    μ, σ², π on the values). The variants:

    * ``"proj"`` (Alg. 1 = Alg. 3, PSA-Proj): keys W_k z, values W_v z (dim → slot_dim), and
      the E-step scores keys against W_q μ(t).
    * ``"base"`` (Alg. 2, PSA): keys = values = z (slot_dim = dim), queries W_q μ(t).
    * ``"exact"``: Alg. 2 without W_q, i.e. exact EM on z (the authors' base code).

    Initialisation, π(0) = 1/K: ``init="learned"`` (authors' code) μ(0) = m + exp(log s)·ε,
    σ(0)² = exp(2 log s) with m, log s ∈ R^slot_dim learned and shared by all slots (starting at
    0: the paper's init); ``"standard"`` (Eq. 3) μ(0) ~ N(0, I), σ(0)² = 1. W_q starts at I and
    W_v = W_k (orthogonal), so the untrained module is exact EM (paper App. E; see
    `init_projections`). Everything beyond the paper is injected: ``refine`` (the authors'
    GRU/MLP/slot norm, `SlotRefinement`) and ``extensions`` (`probslot.nn.extensions`); positions
    in the mixture are the subclass `probslot.nn.positions.PositionalPSA`.

    Args:
        num_slots: default number of slots K (override per call with ``num_slots=``).
        dim: feature size D of the input tokens.
        slot_dim: slot size d (default ``dim``); must equal ``dim`` unless ``variant="proj"``.
        iters: number of EM iterations T ≥ 1.
        variant: ``"proj"``, ``"base"`` or ``"exact"`` (above).
        variance: ``"mle"`` (Alg. 1) or ``"map"``, the prior-regularised update of the authors'
            code (paper notes §11.2, see `em_step`).
        init: ``"learned"`` or ``"standard"`` (above).
        min_var: variance floor (see `probslot.nn.functional.DEFAULT_MIN_VAR`).
        refine: a `SlotRefinement` (or any module with ``query_input(μ)`` and
            ``forward(μ_EM, μ_prev)``), or None for the paper's EM.
        extensions: `EMExtension` parts, run in the given order (``after_em`` in reverse).
    """

    coord_dims: int = 0  # position features at the end of each token (see PositionalPSA)

    def __init__(
        self,
        num_slots: int,
        dim: int,
        slot_dim: int | None = None,
        iters: int = 3,
        *,
        variant: Variant = "proj",
        variance: Variance = "mle",
        init: Init = "learned",
        min_var: float = DEFAULT_MIN_VAR,
        refine: nn.Module | None = None,
        extensions: Sequence[EMExtension] = (),
    ) -> None:
        super().__init__()
        self.num_slots = check_positive_int("num_slots", num_slots)
        self.dim = check_positive_int("dim", dim)
        self.slot_dim = d = check_positive_int("slot_dim", dim if slot_dim is None else slot_dim)
        self.iters = check_positive_int("iters", iters)
        self.variant: Variant = check_choice("variant", variant, ("proj", "base", "exact"))
        self.variance: Variance = check_choice("variance", variance, ("mle", "map"))
        self.init: Init = check_choice("init", init, ("learned", "standard"))
        self.min_var = check_float("min_var", min_var, low=0.0, low_open=True)
        if variant != "proj" and d != self.dim:
            raise ValueError(
                f"variant={variant!r} has no key/value projections, so slot_dim must equal "
                f"dim={self.dim}; got slot_dim={d}. Use variant='proj' to change size."
            )
        # registration order as in probslot 0.1.0 (the optimiser and clipping see this order)
        self.norm_inputs: nn.Module = nn.LayerNorm(self.dim)
        self.to_k: nn.Module = (
            nn.Linear(self.dim, d, bias=False) if variant == "proj" else nn.Identity()
        )
        self.to_v: nn.Module = (
            nn.Linear(self.dim, d, bias=False) if variant == "proj" else nn.Identity()
        )
        self.to_q: nn.Module = nn.Linear(d, d, bias=False) if variant != "exact" else nn.Identity()
        self.init_projections("em")
        if refine is not None and not (
            callable(getattr(refine, "query_input", None)) and isinstance(refine, nn.Module)
        ):
            raise TypeError(
                f"refine must be a module with query_input(mu) and forward(mu_em, mu_prev), e.g. "
                f"SlotRefinement; got {type(refine).__name__}"
            )
        self.refine = refine
        self.extensions = nn.ModuleList(self._checked(extensions))
        if init == "learned":
            self.init_loc = nn.Parameter(torch.zeros(d))
            self.init_log_scale = nn.Parameter(torch.zeros(d))
        else:
            self.register_parameter("init_loc", None)
            self.register_parameter("init_log_scale", None)
        self._register_load_state_dict_pre_hook(_map_old_keys, with_module=True)

    @torch.no_grad()
    def init_projections(self, scheme: ProjInit = "em") -> None:
        """Reset W_q, W_k, W_v: ``"em"`` (at construction) W_q = I, W_v = W_k orthogonal, so the
        untrained module is exact EM on W_k z; ``"torch"`` PyTorch's default Linear init.

        Paper App. E: the E-step scores keys against W_q μ while μ and σ² live in value space,
        so "for EM to have an exact solution, this transformation needs to be the identity".
        With PyTorch's init W_q shrinks every query towards the origin (by ~1/√3 per dimension),
        the first E-step hands nearly all tokens to the slot nearest the origin, π collapses
        onto it and the other slots never recover. Measured on clustered tokens at init:
        FG-ARI 0.92 ("em") vs 0.19 ("torch").
        """
        self.proj_init: ProjInit = check_choice("proj_init", scheme, ("em", "torch"))
        linears = [m for m in (self.to_k, self.to_v, self.to_q) if isinstance(m, nn.Linear)]
        if scheme == "torch":
            for m in linears:
                m.reset_parameters()
            return
        if isinstance(self.to_q, nn.Linear):
            nn.init.eye_(self.to_q.weight)
        if isinstance(self.to_k, nn.Linear) and isinstance(self.to_v, nn.Linear):
            nn.init.orthogonal_(self.to_k.weight)
            self.to_v.weight.copy_(self.to_k.weight)

    def _checked(self, extensions: Sequence[EMExtension]) -> tuple[EMExtension, ...]:
        if isinstance(extensions, EMExtension) or not isinstance(
            extensions, (Sequence, nn.ModuleList)
        ):
            raise TypeError(
                f"extensions must be a sequence of EMExtension; got {type(extensions).__name__}"
            )
        for ext in extensions:
            if not isinstance(ext, EMExtension):
                raise TypeError(f"extensions must hold EMExtension parts; got {type(ext).__name__}")
            ext.check(self)
        return tuple(extensions)

    def extension(self, kind: type[EMExtension]) -> Any:
        """The module's extension of type `kind` (e.g. `ARDPrune`), or None."""
        return find_extension(self.extensions, kind)

    def extra_repr(self) -> str:
        settings: Mapping[str, object] = {
            "variant": self.variant,
            "variance": self.variance,
            "init": self.init,
            "min_var": self.min_var,
            "proj_init": self.proj_init,
            **self._extra_settings(),
        }
        defaults = {
            "variant": "proj",
            "variance": "mle",
            "init": "learned",
            "min_var": DEFAULT_MIN_VAR,
            "proj_init": "em",
        }
        shown = [f"{k}={v!r}" for k, v in settings.items() if k not in defaults or v != defaults[k]]
        head = f"num_slots={self.num_slots}, dim={self.dim}, slot_dim={self.slot_dim}, iters={self.iters}"
        return ", ".join([head, *shown])

    def _extra_settings(self) -> dict[str, object]:
        return {}

    # -- the pieces of one forward call ---------------------------------------------------------
    def normalize(self, inputs: Tensor) -> Tensor:
        """z = LayerNorm(inputs) (b, n, dim): the input norm of slot attention, which puts
        tokens on a unit scale so that ``min_var`` and the init are meaningful."""
        return self.norm_inputs(inputs)

    def initial_state(
        self,
        batch: int,
        num_slots: int,
        device: torch.device,
        dtype: torch.dtype,
        draw: Draw = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(μ(0) (b, k, d), σ(0)² (b, k, d), log π(0) (b, k)) for one forward call; `draw`
        picks the noise ε (see `probslot.nn.layers.slot_noise`)."""
        shape = (batch, num_slots, self.slot_dim)
        eps = slot_noise(shape, draw, self.training, device, dtype)
        if self.init_loc is not None and self.init_log_scale is not None:
            mu = self.init_loc + self.init_log_scale.exp() * eps
            var = (2.0 * self.init_log_scale).exp().expand(shape)
        else:
            mu = eps
            var = torch.ones(shape, device=device, dtype=dtype)
        log_pi = torch.full((batch, num_slots), -math.log(num_slots), device=device, dtype=dtype)
        return mu, var, log_pi

    def start(
        self,
        inputs: Tensor,
        num_slots: int | None,
        mask: Tensor | None,
        parts: Sequence[EMExtension],
        temperature: float | None,
        draw: Draw = None,
    ) -> EMState:
        """The state before the first iteration: checked and normalised tokens, keys and
        (centred) values, initial slots, the parts' ``before_em`` and keys², values²."""
        k = resolve_num_slots(self.num_slots, num_slots)
        inputs = prepare_grouping_inputs(inputs, self.dim, mask)  # padded tokens zeroed
        z = self.normalize(inputs)  # (b, n, dim)
        keys, values = self.to_k(z), self.to_v(z)  # (b, n, d) each
        # centre the values once per forward instead of inside every em_step (`center=False`);
        # exact: μ is shifted back after each M-step, σ² and π do not depend on the shift
        shift = token_mean(values, mask).detach()  # (b, 1, d)
        param_dtype = self.init_loc.dtype if self.init_loc is not None else inputs.dtype
        mu, var, log_pi = self.initial_state(inputs.shape[0], k, inputs.device, param_dtype, draw)
        state = EMState(
            keys=keys, values=values - shift, mask=mask, shift=shift, mu=mu, var=var,
            log_pi=log_pi, pi=log_pi.exp(), iters=self.iters, min_var=self.min_var,
            shared_tokens=self.variant != "proj", coord_dims=self.coord_dims,
        )  # fmt: skip
        for ext in parts:
            state = ext.before_em(state)
        if temperature is not None:  # the call's temperature wins over a TemperedEStep
            temperature = check_float("temperature", temperature, low=0.0, low_open=True)
            state = state.replace(temperature=temperature)
        return _with_squares(state)  # keys², values²: iteration-invariant, computed once

    def e_step_inputs(self, state: EMState) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(keys, keys², σ², log π) the E-step scores this iteration (all features here)."""
        assert state.keys_sq is not None
        return state.keys, state.keys_sq, state.var, state.log_pi

    def forward(
        self, inputs: Tensor, num_slots: int | None = None, mask: Tensor | None = None, *,
        temperature: float | None = None, extensions: Sequence[EMExtension] | None = None,
        draw: Draw = None,
    ) -> SlotPosterior:  # fmt: skip
        """inputs (b, n, dim), mask (b, n) bool or None → `SlotPosterior` over k slots. Per call:
        the E-step's ``temperature`` (None: the module's `TemperedEStep`, else 1), ``extensions``
        replacing the module's parts (`extensions.with_settings`) and the ``draw`` of the initial
        slots (None: random in training, the fixed draw 0 in eval mode; `layers.slot_noise`)."""
        parts = self.extensions if extensions is None else self._checked(extensions)
        state = self.start(inputs, num_slots, mask, parts, temperature, draw)
        for t in range(1, self.iters + 1):
            mu = state.mu
            query = self.to_q(self.refine.query_input(mu) if self.refine is not None else mu)
            keys, keys_sq, var, log_pi = self.e_step_inputs(state)
            step = em_step(
                keys, state.values, query[..., : keys.shape[-1]], var, log_pi, state.mask,
                min_var=self.min_var, variance=self.variance,
                prev_mu=mu - state.shift if self.variance == "map" else None,
                center=False, keys_sq=keys_sq, values_sq=state.values_sq,
                temperature=state.temperature,
            )  # fmt: skip
            new_mu = step.mu + state.shift
            if self.refine is not None:
                new_mu = self.refine(new_mu, mu)
            state = state.replace(mu=new_mu, var=step.var, pi=step.pi, attn=step.attn)
            for ext in parts:
                state = ext.after_iteration(t, state)
            # clamp so a dead slot (π = 0) gives a finite log and a finite gradient
            state = state.replace(log_pi=state.pi.clamp_min(torch.finfo(state.pi.dtype).tiny).log())
        for ext in reversed(parts):
            state = ext.after_em(state)
        assert state.attn is not None  # iters >= 1
        return SlotPosterior(mu=state.mu, var=state.var, pi=state.pi, attn=state.attn)


def _with_squares(state: EMState) -> EMState:
    """keys² and values² in the EM compute dtype, without graph (float64 stays float64)."""
    dtype = torch.float64 if state.values.dtype == torch.float64 else torch.float32
    values_sq = state.values.detach().to(dtype).square()  # (b, n, d)
    keys_sq = values_sq if state.keys is state.values else state.keys.detach().to(dtype).square()
    return state.replace(keys_sq=keys_sq, values_sq=values_sq)


def _map_old_keys(
    module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any
) -> None:
    """Load state dicts of probslot 0.1.0, whose refinements sat on the module itself."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        for old, new in _OLD_KEYS.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old) :]] = state_dict.pop(key)
                break
