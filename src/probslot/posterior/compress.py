"""Compress a large Gaussian mixture (e.g. q(z) with millions of components) into a small one.

The compact mixture is fitted by EM on samples drawn from the large one (k-means++ start,
vectorised torch, E-steps in blocks so memory stays bounded), and the fidelity lost is reported
as a Monte-Carlo estimate of KL(q || q_c) on held-out samples of q:
KL ≈ mean_j [log q(z_j) − log q_c(z_j)], z_j ~ q.

Axis legend: s samples, c components of the compact mixture, d slot dim.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from probslot.posterior.mixture import (
    _BLOCK_ELEMENTS,
    GaussianMixture,
    draw_from_cdf,
    log_density_params,
    point_features,
)
from probslot.validation import check_float, check_int, check_positive_int

__all__ = ["CompressionReport", "compress_mixture"]


@dataclass(frozen=True)
class CompressionReport:
    """How much of q(z) a compressed mixture q_c keeps.

    Attributes:
        original_components:  components of q.
        n_components:         components of q_c.
        num_samples:          q-samples used to fit q_c by EM.
        num_holdout:          fresh q-samples used to measure fidelity.
        iterations:           EM iterations run.
        converged:            whether the mean log-likelihood changed by < tol before `iters`.
        train_loglik:         mean log q_c on the fitting samples (nats per slot).
        holdout_loglik_q:     mean log q(z) on held-out z ~ q.
        holdout_loglik_compressed: mean log q_c(z) on the same points.
        kl_estimate:          holdout_loglik_q − holdout_loglik_compressed ≈ KL(q || q_c) ≥ 0,
                              in nats per slot (Monte-Carlo; may be slightly < 0 by noise).
        kl_stderr:            its standard error.
    """

    original_components: int
    n_components: int
    num_samples: int
    num_holdout: int
    iterations: int
    converged: bool
    train_loglik: float
    holdout_loglik_q: float
    holdout_loglik_compressed: float
    kl_estimate: float
    kl_stderr: float

    @property
    def compression_ratio(self) -> float:
        """original_components / n_components."""
        return self.original_components / self.n_components

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "compression_ratio": self.compression_ratio}

    def __str__(self) -> str:
        return (
            f"compressed {self.original_components} → {self.n_components} components "
            f"({self.compression_ratio:.1f}×) with {self.iterations} EM iterations"
            f"{'' if self.converged else ' (not converged)'}; held-out log-likelihood "
            f"{self.holdout_loglik_q:.4f} under q vs {self.holdout_loglik_compressed:.4f} under "
            f"q_c: KL(q || q_c) ≈ {self.kl_estimate:.4f} ± {self.kl_stderr:.4f} nats per slot"
        )


def _sq_dists(x: Tensor, centres: Tensor) -> Tensor:
    """(s, c) squared Euclidean distances via the matmul expansion."""
    return ((x * x).sum(1, keepdim=True) - 2 * x @ centres.T + (centres * centres).sum(1)).clamp_(
        min=0
    )


def _kmeans_pp(x: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """(n, d) greedy k-means++ seeds (Arthur & Vassilvitskii 2007, D² sampling).

    Each step draws 2 + ⌊ln n⌋ candidates by D² sampling and keeps the one that lowers the
    potential Σ_s min_c ||x_s − c||² most (as scikit-learn does): plain D² sampling often puts
    two seeds in one cluster in high dimension, where within-cluster distances add up.
    """
    s = x.shape[0]
    trials = 2 + int(math.log(n))
    first = int(torch.randint(s, (1,), generator=generator, device=x.device))
    centres = [x[first]]
    d2 = _sq_dists(x, x[first : first + 1])[:, 0]  # (s,)
    for _ in range(1, n):
        cdf = torch.cumsum(d2.double(), 0)
        if cdf[-1] <= 0:  # fewer distinct points than components: any point will do
            cand = torch.randint(s, (trials,), generator=generator, device=x.device)
        else:
            cand = draw_from_cdf(cdf, trials, generator)  # (t,)
        new = torch.minimum(d2[:, None], _sq_dists(x, x[cand]))  # (s, t)
        best = int(new.sum(0).argmin())
        centres.append(x[cand[best]])
        d2 = new[:, best].contiguous()
    return torch.stack(centres)


def _e_step(
    x: Tensor, feats: Tensor, weights: Tensor, means: Tensor, variances: Tensor
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Sufficient statistics Σr (c,), Σr x (c, d), Σr x² (c, d) and Σ log-likelihood."""
    s, d = x.shape
    c = means.shape[0]
    zero = torch.zeros(d, dtype=x.dtype, device=x.device)
    w, b = log_density_params(weights.log(), means, variances, zero)  # (2d, c), (c,)
    nk = torch.zeros(c, dtype=x.dtype, device=x.device)
    sx = torch.zeros(c, d, dtype=x.dtype, device=x.device)
    sxx = torch.zeros(c, d, dtype=x.dtype, device=x.device)
    ll = 0.0
    block = max(1, _BLOCK_ELEMENTS // c)
    for s0 in range(0, s, block):
        s1 = min(s0 + block, s)
        joint = torch.addmm(b, feats[s0:s1], w)  # (s', c)
        lse = torch.logsumexp(joint, dim=1, keepdim=True)  # (s', 1)
        r = joint.sub_(lse).exp_()  # (s', c) responsibilities, in place
        nk += r.sum(0)
        sx += r.T @ x[s0:s1]
        sxx += r.T @ feats[s0:s1, :d]  # feats[:, :d] = x²
        ll += float(lse.sum())
    return nk, sx, sxx, ll


def compress_mixture(
    mixture: GaussianMixture,
    n_components: int,
    *,
    num_samples: int = 100_000,
    iters: int = 100,
    seed: int = 0,
    num_holdout: int = 4096,
    tol: float = 1e-5,
    reg_covar: float = 1e-6,
    chunk_size: int = 2048,
) -> tuple[GaussianMixture, CompressionReport]:
    """Fit an `n_components` diagonal GMM q_c to samples of `mixture` (q) and measure the loss.

    Args:
        mixture:      q, e.g. an `AggregatePosterior` with M·K components.
        n_components: components of q_c (≤ num_samples).
        num_samples:  q-samples for EM; more samples, a closer fit to q (not to one draw).
        iters:        maximum EM iterations.
        seed:         seeds the q-samples, k-means++ and dead-component restarts.
        num_holdout:  fresh q-samples for the KL(q || q_c) estimate (each costs one
                      `mixture.log_prob` evaluation against all of q's components).
        tol:          stop when the mean log-likelihood improves by less than this (nats).
        reg_covar:    added to every variance (as scikit-learn's GaussianMixture), > 0 keeps
                      components from collapsing onto single samples.
        chunk_size:   components per block in `mixture.log_prob`.

    Returns:
        (q_c, report): q_c is a `GaussianMixture` in the mixture's dtype whose metadata copies
        q's and adds ``compressed_from`` and ``num_slots``; see `CompressionReport`.
    """
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture; got {type(mixture).__name__}")
    check_positive_int("n_components", n_components)
    check_positive_int("num_samples", num_samples)
    if num_samples < n_components:
        raise ValueError(
            f"num_samples must be >= n_components to fit them; got num_samples={num_samples} < "
            f"n_components={n_components}"
        )
    check_positive_int("iters", iters)
    check_int("seed", seed, low=0)
    check_positive_int("num_holdout", num_holdout)
    check_positive_int("chunk_size", chunk_size)
    tol = check_float("tol", tol, low=0.0)
    reg_covar = check_float("reg_covar", reg_covar, low=0.0)

    device = mixture.device
    compute = torch.promote_types(mixture.dtype, torch.float32)
    gen = torch.Generator(device=device).manual_seed(seed)
    samples = mixture.sample(num_samples, gen).to(compute)  # (s, d)
    holdout = mixture.sample(num_holdout, gen).to(compute)  # (h, d)

    # EM in coordinates centred on the sample mean (limits cancellation in Σr x² − m²)
    centre = samples.mean(0)  # (d,)
    x = samples - centre  # (s, d)
    feats = point_features(x, torch.zeros_like(centre))  # (s, 2d) = [x², x]
    s, d = x.shape
    floor = float(reg_covar) if reg_covar > 0 else 1e-12
    global_var = x.var(0, unbiased=False) + floor  # (d,)

    # start: k-means++ seeds, then one hard assignment gives weights, means and variances
    seeds = _kmeans_pp(x, n_components, gen)  # (c, d)
    labels = torch.cat(
        [_sq_dists(x[i : i + 65536], seeds).argmin(1) for i in range(0, s, 65536)]
    )  # (s,)
    r = torch.zeros(s, n_components, dtype=compute, device=device)
    r[torch.arange(s, device=device), labels] = 1
    nk = r.sum(0)
    sx, sxx = r.T @ x, r.T @ feats[:, :d]
    del r

    def m_step(nk: Tensor, sx: Tensor, sxx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        alive = nk > 1e-8 * s
        nk_safe = nk.clamp(min=1e-30)[:, None]
        means = sx / nk_safe  # (c, d)
        variances = (sxx / nk_safe - means * means).clamp_(min=0) + floor  # (c, d)
        if not bool(alive.all()):  # restart dead components at random samples
            dead = (~alive).nonzero()[:, 0]
            pick = torch.randint(s, (dead.numel(),), generator=gen, device=device)
            means[dead] = x[pick]
            variances[dead] = global_var
            nk = torch.where(alive, nk, torch.full_like(nk, s / n_components))
        return nk / nk.sum(), means, variances

    weights, means, variances = m_step(nk, sx, sxx)
    prev, mean_ll, converged, iterations = -math.inf, -math.inf, False, 0
    for it in range(iters):
        nk, sx, sxx, ll = _e_step(x, feats, weights, means, variances)
        weights, means, variances = m_step(nk, sx, sxx)
        iterations, mean_ll = it + 1, ll / s
        if abs(mean_ll - prev) < tol:
            converged = True
            break
        prev = mean_ll

    compact = GaussianMixture(
        weights.to(mixture.dtype),
        (means + centre).to(mixture.dtype),
        variances.to(mixture.dtype),
        {
            **mixture.metadata,
            "compressed_from": mixture.num_components,
            **(
                {"num_slots": mixture._default_num_slots()}
                if mixture._default_num_slots() is not None
                else {}
            ),
        },
    )
    lq = mixture.log_prob(holdout, chunk_size=chunk_size).double()  # (h,)
    lc = compact.log_prob(holdout, chunk_size=chunk_size).double()  # (h,)
    gap = lq - lc
    stderr = float(gap.std(unbiased=True) / math.sqrt(num_holdout)) if num_holdout > 1 else math.nan
    report = CompressionReport(
        original_components=mixture.num_components,
        n_components=n_components,
        num_samples=num_samples,
        num_holdout=num_holdout,
        iterations=iterations,
        converged=converged,
        train_loglik=float(mean_ll),
        holdout_loglik_q=float(lq.mean()),
        holdout_loglik_compressed=float(lc.mean()),
        kl_estimate=float(gap.mean()),
        kl_stderr=stderr,
    )
    return compact, report
