"""The EM maths of Probabilistic Slot Attention as one pure function (paper Alg. 1, Eqs. 5–6).

Axis legend (see `probslot.typing`): b batch · n tokens · k slots · d feature dim.

`em_step` is the only place where the E- and M-steps live; `ProbabilisticSlotAttention` calls it
once per iteration. It never builds a (b, k, n, d) tensor: the diagonal-Gaussian quadratic form
Σ_d (k_nd − m_kd)² / v_kd is expanded into batched matmuls,

    Σ_d k_nd² / v_kd − 2 Σ_d k_nd m_kd / v_kd + Σ_d m_kd² / v_kd,

and the M-step moments are Â @ v and Â @ v². Two small autograd functions do these matmuls and
keep only the tokens themselves for backward (squares and float32 upcasts are recomputed or
passed in once), so the memory per iteration is O(b·k·n + b·k·d) on top of the (b, n, d) tokens.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from probslot.typing import SlotPosterior

__all__ = ["DEFAULT_MIN_VAR", "EMStep", "em_step", "gaussian_log_likelihood", "token_mean"]

#: Floor on every diagonal variance (inputs and outputs of `em_step`). Features reaching PSA are
#: LayerNorm-ed (unit scale), so 1e-4 (a standard deviation of 0.01) is far below any useful
#: component width, yet it bounds 1/σ² by 1e4, which keeps the expanded quadratic form accurate
#: to ~3 significant digits in float32 and stops a component collapsing onto a single token
#: (the classic EM singularity, where the likelihood goes to +inf).
DEFAULT_MIN_VAR: float = 1e-4

# Added to every real token's responsibility before normalising over tokens (Â), so a slot that
# no token claims (Σ_n A_nk underflows to 0) gets uniform weights, i.e. it is re-centred on the
# data mean with the data variance instead of producing 0/0. It is 1e-12 of a token's unit mass,
# below float32 resolution for any slot that holds a token; π uses the raw A, so a dead slot keeps
# π = 0 for relevance determination.
_ATTN_EPS: float = 1e-12

_LOG_2PI: float = math.log(2.0 * math.pi)


#: Result of one EM iteration: the same four fields as the module's output (mu, var, pi, attn),
#: so a step is a `SlotPosterior` (new means, variances floored at `min_var`, weights, A).
EMStep = SlotPosterior


def _check(
    keys: Tensor,
    values: Tensor,
    query_mean: Tensor,
    var: Tensor,
    log_pi: Tensor,
    mask: Tensor | None,
) -> None:
    """Shape/dtype validation: cheap (no device sync), run before any arithmetic."""
    for name, t in (("keys", keys), ("values", values), ("query_mean", query_mean), ("var", var)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must be 3-D; got shape {tuple(t.shape)} ({t.dim()}-D)")
    b, n, d = keys.shape
    if values.shape[:2] != (b, n):
        raise ValueError(
            f"values must be (b={b}, n={n}, d_v) like keys; got values {tuple(values.shape)}"
        )
    if query_mean.shape[0] != b or query_mean.shape[2] != d:
        raise ValueError(
            f"query_mean must be (b={b}, k, d={d}) to match keys {tuple(keys.shape)}; "
            f"got {tuple(query_mean.shape)}"
        )
    k = query_mean.shape[1]
    if k < 1:
        raise ValueError(
            f"query_mean must hold at least one slot; got shape {tuple(query_mean.shape)}"
        )
    if var.shape != (b, k, d):
        raise ValueError(
            f"var must be (b={b}, k={k}, d={d}) like query_mean; got {tuple(var.shape)}"
        )
    if not isinstance(log_pi, Tensor) or log_pi.shape != (b, k):
        got = tuple(log_pi.shape) if isinstance(log_pi, Tensor) else type(log_pi).__name__
        raise ValueError(f"log_pi must be (b={b}, k={k}); got {got}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor (True = real token); got {got}")
        if mask.shape != (b, n):
            raise ValueError(f"mask must be (b={b}, n={n}); got {tuple(mask.shape)}")


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32: EM arithmetic never runs in half precision."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def em_step(
    keys: Tensor,
    values: Tensor,
    query_mean: Tensor,
    var: Tensor,
    log_pi: Tensor,
    mask: Tensor | None = None,
    *,
    min_var: float = DEFAULT_MIN_VAR,
    variance: Literal["mle", "map"] = "mle",
    prev_mu: Tensor | None = None,
    center: bool = True,
    keys_sq: Tensor | None = None,
    values_sq: Tensor | None = None,
    temperature: float = 1.0,
) -> EMStep:
    """One EM iteration of Probabilistic Slot Attention (paper Alg. 1, Eq. 5), memory-lean.

    E-step (over slots, in log space):
        log A_nk = log π_k + log N(k_n; m_k, diag σ_k²) − logsumexp_j(...)
    Normalise over tokens: Â_nk = A_nk / Σ_l A_lk.
    M-step on the values:  μ_k = Σ_n Â_nk v_n,   π_k = Σ_n A_nk / N_real, and

    * ``variance="mle"`` (Alg. 1): σ_k² = Σ_n Â_nk (v_n − μ_k)², around the *new* mean.
    * ``variance="map"``: the prior-regularised update of the authors' code (not in the paper;
      paper notes §11.2): σ_k² = (σ₀² + Σ_n A_nk (v_n − μ_prev,k)²) / (N_k + 2d + 4) with
      N_k = Σ_n A_nk, σ₀² = Var_n(v) / K^{1/d} (population variance over real tokens, per
      feature) and μ_prev = ``prev_mu``, the *previous* mean in value space.

    Args:
        keys:       (b, n, d) tokens the E-step scores (W_k z, or z for Alg. 2).
        values:     (b, n, d_v) tokens the M-step averages (W_v z, or z).
        query_mean: (b, k, d) component means in key space (W_q μ(t) in Alg. 1).
        var:        (b, k, d) diagonal variances σ(t)²; floored at ``min_var`` before use.
        log_pi:     (b, k) log mixing weights log π(t) (−inf allowed for dead slots).
        mask:       optional (b, n) bool, True = real token. Masked tokens get A = 0, do not
                    move any slot and do not count in N_real; their keys/values may be garbage.
        min_var:    floor on variances (see `DEFAULT_MIN_VAR`).
        variance:   "mle" (paper) or "map" (authors' code).
        temperature: tempered E-step A_nk ∝ (π_k N(k_n; m_k, σ_k²))^{1/T} (deterministic
                    annealing, Ueda & Nakano 1998); T = 1 (default) is the paper's EM. T > 1
                    softens responsibilities, which keeps one slot from claiming every token
                    early in training (see `ProbabilisticSlotAttention`).
        prev_mu:    (b, k, d_v) previous means; required for ``variance="map"``.
        center:     shift the values by their per-image mean before the variance matmuls (see
                    below). Pass False only for values that are already centred (e.g. by
                    `token_mean` once per forward, as `ProbabilisticSlotAttention` does); it
                    saves two elementwise passes per call.
        keys_sq:    optional precomputed keys² (b, n, d), used as a constant (gradients still
                    flow through the keys exactly). Iterating callers compute it once per
                    forward (as `ProbabilisticSlotAttention` does) instead of on every call.
        values_sq:  optional precomputed values² (b, n, d_v), the same; only with
                    ``center=False``.

    Returns:
        `EMStep` with mu (b, k, d_v), var (b, k, d_v), pi (b, k), attn (b, k, n), all in float32
        (float64 if any input is float64), also under bf16/fp16 autocast.

    The variance for "mle" uses Σ_n Â_nk (v_n − c)² − (μ_k − c)² with a per-image shift c (the
    mean of the real values), from matmuls in float32 (v − c and its square are recomputed in
    backward rather than stored), clamped at ``min_var``.
    Why not the centred two-pass form Σ_n Â_nk (v_n − μ_k)²: it needs either a (b, k, n, d)
    tensor or a loop over slots with the same traffic. Why the shift: the raw one-pass form
    E[v²] − μ² loses about log10(|μ|²/σ²) digits to cancellation; projected features often share
    a large common offset, which the shift removes exactly, leaving only the (bounded) spread of
    slot means around the image mean. The clamp guards the remaining rounding.
    """
    _check(keys, values, query_mean, var, log_pi, mask)
    if variance not in ("mle", "map"):
        raise ValueError(f"variance must be 'mle' or 'map'; got {variance!r}")
    if not (isinstance(min_var, (int, float)) and min_var > 0):
        raise ValueError(f"min_var must be a positive float; got {min_var!r}")
    if variance == "map":
        if prev_mu is None:
            raise ValueError("variance='map' needs prev_mu (b, k, d_v), the previous slot means")
        exp_shape = (*query_mean.shape[:2], values.shape[2])
        if prev_mu.shape != exp_shape:
            raise ValueError(f"prev_mu must be {exp_shape}; got {tuple(prev_mu.shape)}")

    if keys_sq is not None and keys_sq.shape != keys.shape:
        raise ValueError(
            f"keys_sq must be keys² with shape {tuple(keys.shape)}; got {tuple(keys_sq.shape)}"
        )
    if values_sq is not None:
        if center:
            raise ValueError(
                "values_sq requires center=False (it must be the square of the given, already "
                "centred values); got center=True"
            )
        if values_sq.shape != values.shape:
            raise ValueError(
                f"values_sq must be values² with shape {tuple(values.shape)}; "
                f"got {tuple(values_sq.shape)}"
            )

    dtype = _compute_dtype(keys, values, query_mean, var, log_pi)
    with torch.autocast(device_type=keys.device.type, enabled=False):
        # keys/values stay in their own dtype (bf16 under autocast): the custom functions below
        # upcast them on the fly, so no float32 copy of a (b, n, d) tensor is kept per iteration
        m_, var_ = query_mean.to(dtype), var.to(dtype).clamp_min(min_var)
        lp = log_pi.to(dtype)
        b, n, d = keys.shape
        num_slots = m_.shape[1]

        if mask is not None:
            # zero padded tokens so that garbage (inf/nan) there cannot reach any sum via 0 * inf
            keep = mask.unsqueeze(-1)  # (b, n, 1)
            keys = keys.masked_fill(~keep, 0.0)
            values = values.masked_fill(~keep, 0.0)
            if keys_sq is not None:
                keys_sq = keys_sq.masked_fill(~keep, 0.0)
            if values_sq is not None:
                values_sq = values_sq.masked_fill(~keep, 0.0)
            n_real = mask.sum(-1, keepdim=True).to(dtype)  # (b, 1)
        else:
            n_real = torch.full((b, 1), float(n), dtype=dtype, device=keys.device)

        # ---- E-step: log π_k + log N(k_n; m_k, σ_k²) for all (k, n), two fused matmuls ----------
        log_joint = _log_joint(keys, m_, var_, lp, keys_sq)  # (b, k, n)
        # softmax (max-shifted, then divided by its sum) rather than exp(x - logsumexp(x)): with
        # tight variances log_joint reaches 1e5 and the subtraction alone loses ~1e-3 in float32,
        # while the division keeps every token's responsibilities on the simplex to rounding
        if temperature != 1.0:
            log_joint = log_joint / temperature
        attn = torch.softmax(log_joint, dim=1)  # (b, k, n), over slots
        if mask is not None:
            attn = attn.masked_fill(~mask.unsqueeze(1), 0.0)

        # ---- M-step ----------------------------------------------------------------------------
        nk = attn.sum(-1)  # (b, k) soft counts N_k
        pi = nk / n_real  # (b, k)
        real = mask.unsqueeze(1).to(dtype) if mask is not None else 1.0
        attn_eps = attn + _ATTN_EPS * real  # (b, k, n)
        attn_hat = attn_eps / attn_eps.sum(-1, keepdim=True)  # normalised over tokens

        # per-image shift c (b, 1, d_v): the mean of the real values. It removes a shared offset
        # so the one-pass variance does not cancel (see docstring). It is detached because the
        # variance does not depend on c (d/dc [Σ Â (v−c)² − (μ−c)²] = 0 as Σ_n Â_nk = 1).
        shift = token_mean(values.to(dtype), mask).detach() if center else None  # (b, 1, d_v)

        def unshift(t: Tensor) -> Tensor:
            return t if shift is None else t + shift

        if variance == "mle":
            mu_c, m2 = _weighted_moments(attn_hat, values, shift, values_sq=values_sq)
            new_var = (m2 - mu_c.square()).clamp_min(min_var)
            mu = unshift(mu_c)
        else:
            assert prev_mu is not None
            mu_c, _ = _weighted_moments(attn_hat, values, shift, second=False)
            mu = unshift(mu_c)
            s1c, s2 = _weighted_moments(attn, values, shift, values_sq=values_sq)  # Σ A(v−c)^1,2
            pc = prev_mu.to(dtype) if shift is None else prev_mu.to(dtype) - shift
            scatter = s2 - 2.0 * pc * s1c + nk.unsqueeze(-1) * pc.square()  # Σ A (v − μ_prev)²
            # uniform weights over real tokens: the population moments of the values
            uniform = (real * torch.ones(b, 1, n, dtype=dtype, device=keys.device)) / (
                n_real.unsqueeze(-1)
            )
            m1u, m2u = _weighted_moments(uniform, values, shift, values_sq=values_sq)
            prior = (m2u - m1u.square()).clamp_min(0.0)  # Var_n(v), population, (b, 1, d_v)
            prior = prior / num_slots ** (1.0 / values.shape[-1])
            denom = nk.unsqueeze(-1) + 2 * values.shape[-1] + 4
            new_var = ((prior + scatter.clamp_min(0.0)) / denom).clamp_min(min_var)

    return EMStep(mu=mu, var=new_var, pi=pi, attn=attn)


class _DiagGaussLogits(torch.autograd.Function):
    """const + w2 @ (x²)ᵀ + w1 @ xᵀ → (b, k, n) without keeping x² or an upcast x.

    w2, w1 (b, k, d) and const (b, k) in the compute dtype; x (b, n, d) in any float dtype.
    Only x itself is saved (it is alive anyway as the keys); x² is recomputed in backward, an
    elementwise pass that costs far less than storing a (b, n, d) tensor per iteration.
    """

    @staticmethod
    def forward(ctx, w2: Tensor, w1: Tensor, const: Tensor, x: Tensor, x2: Tensor | None) -> Tensor:  # type: ignore[override]
        xf = x.to(w2.dtype)
        sq = xf.square() if x2 is None else x2.to(w2.dtype)
        out = torch.baddbmm(const.unsqueeze(-1), w1, xf.transpose(1, 2))
        out = out.baddbmm_(w2, sq.transpose(1, 2))
        ctx.save_for_backward(w2, w1, x, x2)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        w2, w1, x, x2 = ctx.saved_tensors
        g_w2 = g_w1 = g_c = g_x = None
        with torch.autocast(device_type=x.device.type, enabled=False):
            xf = x.to(w2.dtype)
            if ctx.needs_input_grad[0]:
                g_w2 = torch.bmm(grad, xf.square() if x2 is None else x2.to(w2.dtype))
            if ctx.needs_input_grad[1]:
                g_w1 = torch.bmm(grad, xf)
            if ctx.needs_input_grad[3]:
                # g_x = gᵀ w1 + 2 x ⊙ (gᵀ w2), built in one buffer
                gt = grad.transpose(1, 2)  # (b, n, k)
                g_x = torch.bmm(gt, w2).mul_(xf).baddbmm_(gt, w1, beta=2.0)
                g_x = g_x.to(x.dtype)
            if ctx.needs_input_grad[2]:
                g_c = grad.sum(-1)
        return g_w2, g_w1, g_c, g_x, None


class _WeightedMoments(torch.autograd.Function):
    """(a @ (x − c), a @ (x − c)²) → two (b, k, d) without keeping x − c, (x − c)² or an upcast x.

    a (b, k, n) weights in the compute dtype; x (b, n, d) in any float dtype; c (b, 1, d) a
    constant shift (no gradient) or None for no shift. Only a, x (and c) are saved; x − c is
    recomputed in backward and squared in place, so at most two (b, n, d) temporaries exist.
    """

    @staticmethod
    def forward(
        ctx, a: Tensor, x: Tensor, c: Tensor | None, second: bool, x2: Tensor | None
    ) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        xc = _centred(x, c, a.dtype)  # (b, n, d), a new tensor only if shifted or upcast
        m1 = torch.bmm(a, xc)
        if second:
            m2 = torch.bmm(a, _square(xc, x, x2, a.dtype))
        else:
            m2 = torch.zeros_like(m1)
            ctx.mark_non_differentiable(m2)
        ctx.save_for_backward(a, x, c, x2)
        ctx.second = second
        return m1, m2

    @staticmethod
    def backward(ctx, g1: Tensor, g2: Tensor):  # type: ignore[override]
        a, x, c, x2 = ctx.saved_tensors
        second = ctx.second
        g_a = g_x = None
        with torch.autocast(device_type=x.device.type, enabled=False):
            xc = _centred(x, c, a.dtype)
            if ctx.needs_input_grad[1]:
                # g_x = aᵀ g1 + 2 (x − c) ⊙ (aᵀ g2), built in one buffer
                at = a.transpose(1, 2)  # (b, n, k)
                if second:
                    g_x = torch.bmm(at, g2).mul_(xc).baddbmm_(at, g1, beta=2.0)
                else:
                    g_x = torch.bmm(at, g1)
                g_x = g_x.to(x.dtype)
            if ctx.needs_input_grad[0]:
                g_a = torch.bmm(g1, xc.transpose(1, 2))
                if second:
                    sq = _square(xc, x, x2, a.dtype)
                    g_a = g_a.baddbmm_(g2, sq.transpose(1, 2))
        return g_a, g_x, None, None, None


def _square(xc: Tensor, x: Tensor, x2: Tensor | None, dtype: torch.dtype) -> Tensor:
    """(x − c)²: the precomputed x2 if given, else squared in place when xc is a temporary."""
    if x2 is not None:
        return x2.to(dtype)
    return xc.square() if xc is x else xc.square_()


def _centred(x: Tensor, c: Tensor | None, dtype: torch.dtype) -> Tensor:
    """x − c in `dtype` (x itself when c is None and x already has `dtype`)."""
    xf = x.to(dtype)
    return xf if c is None else xf - c


def token_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """(b, 1, d) mean of x (b, n, d) over real tokens (mask (b, n) bool, True = real)."""
    if mask is None:
        return x.mean(1, keepdim=True)
    keep = mask.unsqueeze(-1)
    return x.masked_fill(~keep, 0.0).sum(1, keepdim=True) / keep.sum(1, keepdim=True)


def _diag_gauss_logits(
    w2: Tensor, w1: Tensor, const: Tensor, x: Tensor, x2: Tensor | None = None
) -> Tensor:
    return _DiagGaussLogits.apply(w2, w1, const, x, None if x2 is None else x2.detach())


def _weighted_moments(
    a: Tensor,
    x: Tensor,
    c: Tensor | None,
    second: bool = True,
    values_sq: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    x2 = None if values_sq is None else values_sq.detach()
    return _WeightedMoments.apply(a, x, c, second, x2)


def _log_joint(
    x: Tensor, mu: Tensor, var: Tensor, log_pi: Tensor, x_sq: Tensor | None = None
) -> Tensor:
    """(b, k, n) log π_k + log N(x_n; μ_k, diag σ_k²), the quadratic form expanded into matmuls.

    mu, var (b, k, d) and log_pi (b, k) in the compute dtype; x (b, n, d) in any float dtype.
    """
    prec = var.reciprocal()  # (b, k, d)
    const = log_pi - 0.5 * (
        (mu.square() * prec).sum(-1) + var.log().sum(-1) + x.shape[-1] * _LOG_2PI
    )  # (b, k)
    return _diag_gauss_logits(-0.5 * prec, mu * prec, const, x, x_sq)


def gaussian_log_likelihood(
    x: Tensor,
    mu: Tensor,
    var: Tensor,
    log_pi: Tensor,
    mask: Tensor | None = None,
) -> Tensor:
    """(b,) data log-likelihood Σ_n log Σ_k π_k N(x_n; μ_k, diag σ_k²) of a diagonal GMM.

    x (b, n, d), mu/var (b, k, d), log_pi (b, k), mask optional (b, n) bool. Same expanded
    quadratic form as `em_step`, so no (b, k, n, d) tensor; the monitor EM must never decrease.
    """
    dtype = _compute_dtype(x, mu, var, log_pi)
    with torch.autocast(device_type=x.device.type, enabled=False):
        log_joint = _log_joint(x, mu.to(dtype), var.to(dtype), log_pi.to(dtype))  # (b, k, n)
        per_token = torch.logsumexp(log_joint, dim=1)  # (b, n)
        if mask is not None:
            per_token = per_token.masked_fill(~mask, 0.0)
        return per_token.sum(-1)
