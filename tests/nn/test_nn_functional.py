"""`probslot.nn.functional.em_step` against a dense reference, EM properties and bad input.

Sizes are pairwise distinct (b=2, n=7, d=5, k=3) so a swapped axis cannot pass.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from probslot.nn.functional import (
    DEFAULT_MIN_VAR,
    EMStep,
    em_step,
    gaussian_log_likelihood,
    token_mean,
)

B, N, D, K = 2, 7, 5, 3


def dense_em(keys, values, qmean, var, log_pi, mask=None, min_var=DEFAULT_MIN_VAR, temperature=1.0):
    """Plain (b, k, n, d) EM step, written from paper Alg. 1 line by line; ``temperature`` T
    tempers the E-step, A ∝ (π N)^{1/T} (deterministic annealing; T = 1 is the paper)."""
    var = var.clamp_min(min_var)
    diff = keys[:, None, :, :] - qmean[:, :, None, :]  # (b, k, n, d)
    log_norm = -0.5 * (
        (diff**2 / var[:, :, None, :]).sum(-1)
        + var.log().sum(-1)[:, :, None]
        + keys.shape[-1] * math.log(2 * math.pi)
    )  # (b, k, n)
    attn = torch.softmax((log_pi[:, :, None] + log_norm) / temperature, dim=1)  # over slots
    if mask is not None:
        attn = attn * mask[:, None, :]
        n_real = mask.sum(-1, keepdim=True).to(keys.dtype)
    else:
        n_real = torch.full((keys.shape[0], 1), float(keys.shape[1]), dtype=keys.dtype)
    nk = attn.sum(-1)  # (b, k)
    attn_hat = attn / nk[:, :, None]
    mu = (attn_hat[:, :, :, None] * values[:, None, :, :]).sum(2)  # (b, k, d)
    new_var = (attn_hat[:, :, :, None] * (values[:, None, :, :] - mu[:, :, None, :]) ** 2).sum(2)
    return mu, new_var.clamp_min(min_var), nk / n_real, attn


def dense_map_var(values, attn, prev_mu, num_slots, mask=None):
    """Authors' MAP variance (paper notes §11.2), dense, around the previous mean."""
    if mask is None:
        mask = torch.ones(values.shape[:2], dtype=torch.bool)
    m = mask[:, :, None].to(values.dtype)
    n_real = m.sum(1, keepdim=True)  # (b, 1, 1)
    mean = (values * m).sum(1, keepdim=True) / n_real
    pop_var = (((values - mean) ** 2) * m).sum(1, keepdim=True) / n_real  # (b, 1, d)
    prior = pop_var / num_slots ** (1.0 / values.shape[-1])
    scatter = (attn[:, :, :, None] * (values[:, None] - prev_mu[:, :, None]) ** 2).sum(2)
    nk = attn.sum(-1, keepdim=True)
    return (prior + scatter) / (nk + 2 * values.shape[-1] + 4)


def random_inputs(dtype=torch.float64, dv=D):
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(B, N, D, generator=g, dtype=dtype)
    values = torch.randn(B, N, dv, generator=g, dtype=dtype) * 2 + 0.5
    qmean = torch.randn(B, K, D, generator=g, dtype=dtype)
    var = torch.rand(B, K, D, generator=g, dtype=dtype) + 0.5
    log_pi = torch.log_softmax(torch.randn(B, K, generator=g, dtype=dtype), dim=-1)
    mask = torch.tensor(
        [[True, True, False, True, True, False, True], [False, True, True, True, True, True, True]]
    )
    return keys, values, qmean, var, log_pi, mask


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("dv", [D, 4])
def test_em_step_matches_dense_reference(use_mask: bool, dv: int) -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs(dv=dv)
    mask = mask if use_mask else None
    out = em_step(keys, values, qmean, var, log_pi, mask)
    assert isinstance(out, EMStep)
    mu, new_var, pi, attn = dense_em(keys, values, qmean, var, log_pi, mask)
    assert out.mu.shape == (B, K, dv) and out.var.shape == (B, K, dv)
    assert out.pi.shape == (B, K) and out.attn.shape == (B, K, N)
    for got, want in ((out.mu, mu), (out.var, new_var), (out.pi, pi), (out.attn, attn)):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_tempered_em_step_matches_dense_reference(use_mask: bool, temperature: float) -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs(dv=4)
    mask = mask if use_mask else None
    out = em_step(keys, values, qmean, var, log_pi, mask, temperature=temperature)
    want = dense_em(keys, values, qmean, var, log_pi, mask, temperature=temperature)
    for got, ref in zip((out.mu, out.var, out.pi, out.attn), want):
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8)
    # tempering changes the responsibilities: the reference is not the plain one
    plain = dense_em(keys, values, qmean, var, log_pi, mask)
    assert not torch.allclose(out.attn, plain[3], atol=1e-3)


@pytest.mark.parametrize("use_mask", [False, True])
def test_em_step_map_variance_matches_dense_reference(use_mask: bool) -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs()
    mask = mask if use_mask else None
    prev_mu = torch.randn(B, K, D, dtype=torch.float64)
    out = em_step(keys, values, qmean, var, log_pi, mask, variance="map", prev_mu=prev_mu)
    mu, _, pi, attn = dense_em(keys, values, qmean, var, log_pi, mask)
    want_var = dense_map_var(values, attn, prev_mu, K, mask)
    torch.testing.assert_close(out.mu, mu, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out.pi, pi, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out.var, want_var, rtol=1e-8, atol=1e-8)


def test_em_step_invariants_and_masking() -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs()
    out = em_step(keys, values, qmean, var, log_pi, mask)
    # responsibilities sum to 1 over slots on real tokens, 0 on masked ones
    torch.testing.assert_close(out.attn.sum(1), mask.to(torch.float64))
    # pi on the simplex, variances positive
    assert (out.pi >= 0).all()
    torch.testing.assert_close(out.pi.sum(-1), torch.ones(B, dtype=torch.float64))
    assert (out.var > 0).all()
    # masked tokens with garbage keys/values (inf, nan) do not move any slot
    keys2, values2 = keys.clone(), values.clone()
    keys2[~mask] = float("nan")
    values2[~mask] = float("inf")
    out2 = em_step(keys2, values2, qmean, var, log_pi, mask)
    for a, b in ((out.mu, out2.mu), (out.var, out2.var), (out.pi, out2.pi), (out.attn, out2.attn)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # dropping the masked tokens entirely gives the same result (image 0 only: rows differ in n)
    keep = mask[0]
    out3 = em_step(keys[:1, keep], values[:1, keep], qmean[:1], var[:1], log_pi[:1], None)
    torch.testing.assert_close(out3.mu, out.mu[:1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out3.var, out.var[:1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out3.pi, out.pi[:1], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out3.attn, out.attn[:1, :, keep], rtol=1e-12, atol=1e-12)


def test_em_step_slot_permutation_equivariance_and_token_invariance() -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs()
    out = em_step(keys, values, qmean, var, log_pi, mask)
    perm = torch.tensor([2, 0, 1])
    outp = em_step(keys, values, qmean[:, perm], var[:, perm], log_pi[:, perm], mask)
    torch.testing.assert_close(outp.mu, out.mu[:, perm])
    torch.testing.assert_close(outp.var, out.var[:, perm])
    torch.testing.assert_close(outp.pi, out.pi[:, perm])
    torch.testing.assert_close(outp.attn, out.attn[:, perm])
    tperm = torch.randperm(N)
    outt = em_step(keys[:, tperm], values[:, tperm], qmean, var, log_pi, mask[:, tperm])
    torch.testing.assert_close(outt.mu, out.mu)
    torch.testing.assert_close(outt.var, out.var)
    torch.testing.assert_close(outt.pi, out.pi)
    torch.testing.assert_close(outt.attn, out.attn[:, :, tperm])


def test_em_step_min_var_floor_and_dead_slot() -> None:
    keys, values, qmean, var, log_pi, _ = random_inputs()
    # all tokens identical: the MLE variance is 0, so the floor applies
    same = keys[:, :1].expand(B, N, D).contiguous()
    out = em_step(same, same, qmean, var, log_pi, min_var=1e-3)
    torch.testing.assert_close(out.var, torch.full_like(out.var, 1e-3))
    # a dead slot (pi = 0) gets no responsibility, keeps pi = 0 and stays finite
    log_pi = log_pi.clone()
    log_pi[:, 1] = float("-inf")
    out = em_step(keys, values, qmean, var, log_pi)
    assert (out.attn[:, 1] == 0).all() and (out.pi[:, 1] == 0).all()
    assert torch.isfinite(out.mu).all() and torch.isfinite(out.var).all()


def test_em_step_float32_accuracy_with_large_offset() -> None:
    """The shifted one-pass variance stays accurate in float32 when values share an offset."""
    keys, values, qmean, var, log_pi, mask = random_inputs()
    values = values + 1000.0  # |μ|²/σ² ≈ 2.5e5: the raw E[v²] − μ² form loses ~5 digits
    _, want_var, _, _ = dense_em(keys, values, qmean, var, log_pi, mask)
    out = em_step(keys.float(), values.float(), qmean.float(), var.float(), log_pi.float(), mask)
    assert out.var.dtype == torch.float32
    torch.testing.assert_close(out.var.double(), want_var, rtol=1e-4, atol=1e-5)


def test_em_step_runs_in_float32_under_bf16_autocast() -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = em_step(
            keys.bfloat16(), values.bfloat16(), qmean.bfloat16(), var.bfloat16(), log_pi, mask
        )
    for t in (out.mu, out.var, out.pi, out.attn):
        assert t.dtype == torch.float32
        assert torch.isfinite(t).all()
    ref = em_step(
        keys.bfloat16().float(),
        values.bfloat16().float(),
        qmean.bfloat16().float(),
        var.bfloat16().float(),
        log_pi,
        mask,
    )
    torch.testing.assert_close(out.mu, ref.mu)
    torch.testing.assert_close(out.attn, ref.attn)


def test_em_step_gradcheck() -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs()
    args = [t.clone().requires_grad_(True) for t in (keys, values, qmean, var, log_pi)]

    def fn(k, v, m, s, lp):
        out = em_step(k, v, m, s, lp, mask, min_var=1e-6)
        return out.mu, out.var, out.pi, out.attn

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)
    prev = torch.randn(B, K, D, dtype=torch.float64, requires_grad=True)

    def fn_map(k, v, m, s, lp, p):
        return em_step(k, v, m, s, lp, None, variance="map", prev_mu=p).var

    assert torch.autograd.gradcheck(fn_map, [*args, prev], eps=1e-6, atol=1e-6)


def make_blobs(seed: int = 0):
    """b=2 images of n=900 2-D points from 3 well-separated diagonal Gaussians."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [12.0, -3.0], [-4.0, 11.0]])
    stds = np.array([[1.0, 0.5], [0.7, 1.3], [1.5, 0.8]])
    weights = np.array([0.5, 0.3, 0.2])
    counts = (weights * 900).astype(int)
    images, labels = [], []
    for _ in range(2):
        pts = [rng.normal(means[j], stds[j], size=(counts[j], 2)) for j in range(3)]
        lab = np.concatenate([np.full(c, j) for j, c in enumerate(counts)])
        order = rng.permutation(len(lab))
        images.append(np.concatenate(pts)[order])
        labels.append(lab[order])
    return torch.tensor(np.stack(images)), np.stack(labels), means, weights


def test_iterated_em_step_is_em_on_separated_blobs() -> None:
    x, labels, means, weights = make_blobs()
    b = x.shape[0]
    # start near (not at) the true means, unit variances, uniform weights
    rng = np.random.default_rng(1)
    mu = torch.tensor(means + rng.normal(0, 2.0, size=means.shape)).expand(b, 3, 2).clone()
    var = torch.ones(b, 3, 2, dtype=torch.float64)
    log_pi = torch.full((b, 3), -math.log(3), dtype=torch.float64)
    lls = [gaussian_log_likelihood(x, mu, var, log_pi)]
    for _ in range(40):
        out = em_step(x, x, mu, var, log_pi, min_var=1e-8)
        mu, var, log_pi = out.mu, out.var, out.pi.log()
        lls.append(gaussian_log_likelihood(x, mu, var, log_pi))
    ll = torch.stack(lls)  # (t, b)
    diffs = ll[1:] - ll[:-1]
    assert (diffs >= -1e-8 * ll[:-1].abs()).all(), f"log-likelihood decreased: {diffs.min()}"
    assert (ll[-1] > ll[0] + 100).all()
    for i in range(b):
        pts = x[i].numpy()
        emp_mu = np.stack([pts[labels[i] == j].mean(0) for j in range(3)])
        emp_var = np.stack([pts[labels[i] == j].var(0) for j in range(3)])
        np.testing.assert_allclose(mu[i].numpy(), emp_mu, atol=1e-3)
        np.testing.assert_allclose(var[i].numpy(), emp_var, rtol=1e-3)
        np.testing.assert_allclose(log_pi[i].exp().numpy(), weights, atol=1e-3)
        # oracle: sklearn's diagonal GMM from the same start converges to the same mixture
        gm = GaussianMixture(
            3,
            covariance_type="diag",
            means_init=means + rng.normal(0, 2.0, size=means.shape),
            reg_covar=1e-9,
            tol=1e-10,
            max_iter=200,
        ).fit(pts)
        np.testing.assert_allclose(mu[i].numpy(), gm.means_, atol=1e-4)
        np.testing.assert_allclose(var[i].numpy(), gm.covariances_, rtol=1e-3)
        np.testing.assert_allclose(log_pi[i].exp().numpy(), gm.weights_, atol=1e-4)
        np.testing.assert_allclose(
            gaussian_log_likelihood(
                x[i : i + 1], mu[i : i + 1], var[i : i + 1], log_pi[i : i + 1]
            ).item(),
            gm.score(pts) * len(pts),
            rtol=1e-8,
        )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: {**a, "keys": a["keys"][0]}, r"keys must be 3-D; got shape \(7, 5\)"),
        (lambda a: {**a, "values": a["values"][:, :6]}, r"values must be \(b=2, n=7, d_v\)"),
        (
            lambda a: {**a, "query_mean": a["query_mean"][..., :4]},
            r"query_mean must be \(b=2, k, d=5\)",
        ),
        (
            lambda a: {**a, "var": a["var"][:, :2]},
            r"var must be \(b=2, k=3, d=5\).*got \(2, 2, 5\)",
        ),
        (
            lambda a: {**a, "log_pi": a["log_pi"][:, :2]},
            r"log_pi must be \(b=2, k=3\); got \(2, 2\)",
        ),
        (lambda a: {**a, "mask": a["mask"].long()}, r"mask must be a bool tensor.*got torch.int64"),
        (lambda a: {**a, "mask": a["mask"][:, :6]}, r"mask must be \(b=2, n=7\); got \(2, 6\)"),
        (lambda a: {**a, "min_var": 0.0}, r"min_var must be a positive float; got 0.0"),
        (lambda a: {**a, "variance": "mape"}, r"variance must be 'mle' or 'map'; got 'mape'"),
        (lambda a: {**a, "variance": "map"}, r"variance='map' needs prev_mu"),
    ],
)
def test_em_step_bad_input(change, match) -> None:
    keys, values, qmean, var, log_pi, mask = random_inputs()
    args = {
        "keys": keys,
        "values": values,
        "query_mean": qmean,
        "var": var,
        "log_pi": log_pi,
        "mask": mask,
    }
    with pytest.raises(ValueError, match=match):
        em_step(**change(args))


@pytest.mark.parametrize("variance", ["mle", "map"])
@pytest.mark.parametrize("use_mask", [False, True])
def test_em_step_precomputed_squares_and_centred_values_match(variance, use_mask) -> None:
    """The fast path the module uses (centred values, squares computed once) is the same maths."""
    keys, values, qmean, var, log_pi, mask = random_inputs()
    mask = mask if use_mask else None
    prev = torch.randn(B, K, D, dtype=torch.float64)
    ref = em_step(keys, values, qmean, var, log_pi, mask, variance=variance, prev_mu=prev)
    shift = token_mean(values, mask)
    vc = values - shift
    fast = em_step(
        keys,
        vc,
        qmean,
        var,
        log_pi,
        mask,
        variance=variance,
        prev_mu=prev - shift,
        center=False,
        keys_sq=keys.square(),
        values_sq=vc.square(),
    )
    torch.testing.assert_close(fast.mu + shift, ref.mu, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast.var, ref.var, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast.pi, ref.pi, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fast.attn, ref.attn, rtol=1e-10, atol=1e-10)


def test_em_step_gradcheck_with_precomputed_squares() -> None:
    """keys_sq / values_sq are constants; gradients still flow exactly through keys / values."""
    keys, values, qmean, var, log_pi, mask = random_inputs()
    args = [t.clone().requires_grad_(True) for t in (keys, values, qmean, var)]

    def fn(k, v, m, s):
        out = em_step(
            k, v, m, s, log_pi, mask, center=False, keys_sq=k.square(), values_sq=v.square()
        )
        return out.mu, out.var, out.pi

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


def test_em_step_bad_precomputed_squares() -> None:
    keys, values, qmean, var, log_pi, _ = random_inputs()
    with pytest.raises(
        ValueError, match=r"keys_sq must be keys² with shape \(2, 7, 5\); got \(2, 5, 7\)"
    ):
        em_step(keys, values, qmean, var, log_pi, keys_sq=keys.transpose(1, 2))
    with pytest.raises(ValueError, match=r"values_sq requires center=False"):
        em_step(keys, values, qmean, var, log_pi, values_sq=values.square())
    with pytest.raises(ValueError, match=r"values_sq must be values² with shape \(2, 7, 5\)"):
        em_step(keys, values, qmean, var, log_pi, center=False, values_sq=values[:, :3])
