"""AggregatePosterior / GaussianMixture: construction, sampling, log_prob against dense oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from probslot.posterior import AggregatePosterior, GaussianMixture

F64 = torch.float64


def random_posterior(m: int = 5, k: int = 3, d: int = 7, dtype=F64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = 2 * torch.randn(m, k, d, generator=g, dtype=dtype)
    var = 0.2 + torch.rand(m, k, d, generator=g, dtype=dtype)
    pi = torch.softmax(torch.randn(m, k, generator=g, dtype=dtype), -1)
    return mu, var, pi


def dense_reference(q: GaussianMixture) -> MixtureSameFamily:
    return MixtureSameFamily(
        Categorical(probs=q.weights), Independent(Normal(q.means, q.variances.sqrt()), 1)
    )


# ---------------------------------------------------------------- construction
def test_properties_and_weights_are_pi_over_m():
    mu, var, pi = random_posterior(m=5, k=3, d=7)
    q = AggregatePosterior(mu, var, pi, metadata={"dataset": "toy"})
    assert (q.num_images, q.num_slots, q.dim, q.num_components) == (5, 3, 7, 15)
    assert q.means.shape == (15, 7) and q.variances.shape == (15, 7)
    # component i*K + k has weight π_ik / M, mean μ_ik, variance σ²_ik
    assert torch.allclose(q.weights, (pi / 5).reshape(-1), rtol=0, atol=1e-15)
    assert torch.equal(q.means[2 * 3 + 1], mu[2, 1])
    assert torch.equal(q.variances[4 * 3 + 2], var[4, 2])
    assert math.isclose(q.weights.sum().item(), 1.0, abs_tol=1e-12)
    assert q.metadata == {"dataset": "toy"}
    assert "num_images=5" in repr(q)


def test_rows_of_pi_are_renormalised_within_tolerance():
    mu, var, pi = random_posterior(m=2, k=3, d=5)
    pi = pi * (1 + 5e-4)  # float32 round-off of a real encoder is far smaller
    q = AggregatePosterior(mu, var, pi)
    assert math.isclose(q.weights.sum().item(), 1.0, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda mu, var, pi: (mu[:0], var[:0], pi[:0]), ValueError, "at least one image"),
        (lambda mu, var, pi: (mu[0], var, pi), ValueError, r"mu must be \(images, slots, dim\)"),
        (lambda mu, var, pi: (mu, var[:, :2], pi), ValueError, "var must have the shape of mu"),
        (lambda mu, var, pi: (mu, var, pi[:, :2]), ValueError, r"pi must be \(m, k\)"),
        (
            lambda mu, var, pi: (mu, var.clone().fill_(0), pi),
            ValueError,
            "var must be finite and > 0",
        ),
        (lambda mu, var, pi: (mu, -var, pi), ValueError, r"found -"),
        (lambda mu, var, pi: (mu, var, 2 * pi), ValueError, "must sum to 1.*image 0 sums to 2"),
        (lambda mu, var, pi: (mu, var, pi - 0.5), ValueError, ">= 0"),
        (lambda mu, var, pi: (mu * math.nan, var, pi), ValueError, "mu must be finite"),
        (lambda mu, var, pi: (mu.float(), var, pi), TypeError, "share a dtype"),
        (lambda mu, var, pi: (mu.long(), var, pi), TypeError, "floating-point"),
        (lambda mu, var, pi: (mu.numpy(), var, pi), TypeError, "mu must be a torch.Tensor"),
    ],
)
def test_construction_rejects_bad_input(change, error, match):
    with pytest.raises(error, match=match):
        AggregatePosterior(*change(*random_posterior(m=5, k=3, d=7)))


def test_metadata_must_be_json():
    with pytest.raises(TypeError, match="JSON-serialisable"):
        AggregatePosterior(*random_posterior(), metadata={"x": object()})
    q = AggregatePosterior(*random_posterior(), metadata={"shape": (2, 3)})
    assert q.metadata == {"shape": [2, 3]}  # normalised to what a file holds


def test_gaussian_mixture_validation():
    w = torch.tensor([0.25, 0.75], dtype=F64)
    m = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        GaussianMixture(2 * w, m, torch.ones_like(m))
    with pytest.raises(ValueError, match=r"weights must be \(2,\)"):
        GaussianMixture(w[:1], m, torch.ones_like(m))
    with pytest.raises(ValueError, match="at least one component"):
        GaussianMixture(w[:0], m[:0], m[:0])


# ---------------------------------------------------------------- sampling
def test_sampling_two_components_reproduces_weights_means_variances():
    # one image, two slots: q(z) = 0.3 N(a, diag va) + 0.7 N(b, diag vb), well separated
    mu = torch.tensor([[[-10.0, 0.0, 5.0], [10.0, 2.0, -5.0]]], dtype=F64)  # (1, 2, 3)
    var = torch.tensor([[[1.0, 0.25, 4.0], [0.5, 2.0, 1.0]]], dtype=F64)
    pi = torch.tensor([[0.3, 0.7]], dtype=F64)
    q = AggregatePosterior(mu, var, pi)
    n = 200_000
    z = q.sample(n, generator=torch.Generator().manual_seed(1))
    assert z.shape == (n, 3) and z.dtype == F64
    second = z[:, 0] > 0  # the components never overlap at x0 = 0 (10 σ away)
    frac = second.double().mean().item()
    assert abs(frac - 0.7) < 4 * math.sqrt(0.21 / n)
    for sel, k in ((~second, 0), (second, 1)):
        zk = z[sel]
        se_mean = (var[0, k] / zk.shape[0]).sqrt()
        assert ((zk.mean(0) - mu[0, k]).abs() < 5 * se_mean).all()
        assert torch.allclose(zk.var(0), var[0, k], rtol=0.03)


def test_sampling_uses_pi_over_m_across_images():
    mu = torch.tensor([[[0.0], [100.0]], [[200.0], [300.0]]], dtype=F64)  # (2, 2, 1)
    var = torch.full_like(mu, 1e-4)
    pi = torch.tensor([[0.1, 0.9], [0.5, 0.5]], dtype=F64)
    q = AggregatePosterior(mu, var, pi)
    n = 100_000
    comp = q.sample_components(n, generator=torch.Generator().manual_seed(2))
    freq = torch.bincount(comp, minlength=4).double() / n
    expected = torch.tensor([0.05, 0.45, 0.25, 0.25], dtype=F64)
    assert (freq - expected).abs().max() < 4 * math.sqrt(0.25 / n)
    z = q.sample(10, generator=torch.Generator().manual_seed(3))
    assert ((z / 100).round() * 100 - z).abs().max() < 0.1  # draws sit on the components


def test_zero_weight_slots_are_never_sampled():
    mu, var, pi = random_posterior(m=3, k=5, d=2)
    pi = torch.zeros_like(pi)
    pi[:, 2] = 1.0  # ARD-pruned slots have π = 0
    q = AggregatePosterior(mu, var, pi)
    comp = q.sample_components(5000, generator=torch.Generator().manual_seed(0))
    assert set((comp % 5).tolist()) == {2}


def test_sampling_is_reproducible_and_scene_shaped():
    q = AggregatePosterior(*random_posterior(m=5, k=3, d=7))
    a = q.sample(11, generator=torch.Generator().manual_seed(5))
    b = q.sample(11, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    scenes = q.sample_scenes(2, generator=torch.Generator().manual_seed(5))
    assert scenes.shape == (2, 3, 7)  # num_slots defaults to K
    assert torch.equal(
        scenes.reshape(6, 7), q.sample(6, generator=torch.Generator().manual_seed(5))
    )
    assert q.sample_scenes(4, num_slots=11).shape == (4, 11, 7)
    assert q.sample(0).shape == (0, 7)
    assert q.sample_scenes(0).shape == (0, 3, 7)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda q: q.sample(-1), ValueError, "n must be an integer >= 0; got -1"),
        (lambda q: q.sample(2.5), TypeError, r"n must be an integer >= 0; got 2.5 \(float\)"),
        (lambda q: q.sample(True), TypeError, "n must be an int"),
        (lambda q: q.sample(3, generator=7), TypeError, "torch.Generator"),
        (
            lambda q: q.sample_scenes(2, num_slots=0),
            ValueError,
            "num_slots must be an integer >= 1",
        ),
        (lambda q: q.sample_scenes(-2), ValueError, "num_scenes must be an integer >= 0"),
        (lambda q: q.log_prob(torch.zeros(3, 5, dtype=F64)), ValueError, r"\(\.\.\., 7\)"),
        (lambda q: q.log_prob(torch.zeros(3, 7, dtype=torch.long)), TypeError, "floating-point"),
        (
            lambda q: q.log_prob(torch.zeros(3, 7, dtype=F64), chunk_size=0),
            ValueError,
            "chunk_size",
        ),
    ],
)
def test_sampling_and_density_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(AggregatePosterior(*random_posterior(m=5, k=3, d=7)))


def test_sample_scenes_of_plain_mixture_needs_num_slots():
    q = GaussianMixture(
        torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.ones(1, 2, dtype=F64)
    )
    with pytest.raises(ValueError, match="num_slots is required"):
        q.sample_scenes(3)
    assert q.sample_scenes(3, num_slots=5).shape == (3, 5, 2)


# ---------------------------------------------------------------- log_prob
@pytest.mark.parametrize("chunk_size", [1, 4, 15, 1000])
def test_log_prob_equals_torch_distributions(chunk_size):
    q = AggregatePosterior(*random_posterior(m=5, k=3, d=7))
    z = 2 * torch.randn(13, 7, dtype=F64)
    expected = dense_reference(q).log_prob(z)
    got = q.log_prob(z, chunk_size=chunk_size)
    assert got.shape == (13,) and got.dtype == F64
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_log_prob_equals_scipy():
    mu, var, pi = random_posterior(m=2, k=3, d=5, seed=4)
    q = AggregatePosterior(mu, var, pi)
    z = torch.randn(11, 5, dtype=F64)
    comps = np.stack(
        [
            np.log(pi[i, k].item() / 2)
            + multivariate_normal(mu[i, k].numpy(), np.diag(var[i, k].numpy())).logpdf(z.numpy())
            for i in range(2)
            for k in range(3)
        ]
    )  # (m·k, p)
    np.testing.assert_allclose(q.log_prob(z, chunk_size=4).numpy(), logsumexp(comps, 0), rtol=1e-12)


def test_log_prob_with_zero_weights_and_batch_shape():
    mu, var, pi = random_posterior(m=3, k=5, d=2)
    pi = torch.zeros_like(pi)
    pi[:, 1] = 0.25
    pi[:, 3] = 0.75
    q = AggregatePosterior(mu, var, pi)
    z = torch.randn(2, 3, 2, dtype=F64)
    ref = dense_reference(q).log_prob(z.reshape(6, 2)).reshape(2, 3)
    torch.testing.assert_close(q.log_prob(z, chunk_size=2), ref, rtol=1e-12, atol=1e-12)


def test_log_prob_float32_far_from_origin_is_accurate():
    # centring on the mixture mean keeps the matmul expansion accurate in float32
    mu, var, pi = random_posterior(m=4, k=3, d=7)
    mu = mu + 1000.0
    q64 = AggregatePosterior(mu, var, pi)
    q32 = q64.to(dtype=torch.float32)
    z = mu[0] + torch.randn(3, 7, dtype=F64)
    torch.testing.assert_close(
        q32.log_prob(z.float()).double(), dense_reference(q64).log_prob(z), rtol=1e-4, atol=1e-3
    )
