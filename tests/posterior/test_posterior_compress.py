"""compress: EM on q-samples recovers known mixtures; the KL(q || q_c) estimate is meaningful."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from probslot.posterior import (
    AggregatePosterior,
    CompressionReport,
    GaussianMixture,
    compress_mixture,
)

F64 = torch.float64
TRUE_MEANS = torch.tensor(
    [[-6.0, 0.0, 2.0], [0.0, 6.0, -2.0], [6.0, -3.0, 0.0]], dtype=F64
)  # (3, 3)


def match(est: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Permutation of est's rows that best matches true's rows (Hungarian on distances)."""
    cost = torch.cdist(true, est).numpy()
    _, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols)


def test_compress_to_true_number_recovers_an_exact_mixture():
    # one image with three slots: q(z) is exactly a 3-component mixture
    var = torch.tensor([[[0.5, 1.0, 0.25], [1.0, 0.5, 0.5], [0.25, 0.25, 1.0]]], dtype=F64)
    pi = torch.tensor([[0.2, 0.3, 0.5]], dtype=F64)
    q = AggregatePosterior(TRUE_MEANS[None], var, pi)
    qc, report = q.compress(3, num_samples=40_000, iters=200, seed=0, num_holdout=2000)
    assert isinstance(qc, GaussianMixture) and not isinstance(qc, AggregatePosterior)
    perm = match(qc.means, TRUE_MEANS)
    torch.testing.assert_close(qc.means[perm], TRUE_MEANS, atol=0.05, rtol=0)
    torch.testing.assert_close(qc.weights[perm], pi[0], atol=0.015, rtol=0)
    torch.testing.assert_close(qc.variances[perm], var[0], rtol=0.06, atol=0)
    assert report.converged and report.n_components == 3 and report.original_components == 3
    assert abs(report.kl_estimate) < max(0.01, 4 * report.kl_stderr)
    assert qc.sample_scenes(2).shape == (2, 3, 3)  # num_slots carried over
    assert qc.metadata["compressed_from"] == 3


def test_compress_many_images_matches_moment_matched_clusters():
    # 40 images; slot k of every image lies near TRUE_MEANS[k]: q(z) has 120 components in 3 groups
    g = torch.Generator().manual_seed(0)
    m = 40
    mu = TRUE_MEANS[None] + 0.3 * torch.randn(m, 3, 3, generator=g, dtype=F64)
    var = 0.2 + 0.2 * torch.rand(m, 3, 3, generator=g, dtype=F64)
    pi = torch.softmax(0.5 * torch.randn(m, 3, generator=g, dtype=F64), -1)
    q = AggregatePosterior(mu, var, pi)
    qc, report = q.compress(3, num_samples=30_000, iters=200, seed=1, num_holdout=1000)
    # oracle: each group's weight, mean and variance by moment matching its components
    w = pi / m  # (m, 3)
    group_w = w.sum(0)  # (3,)
    group_mean = (w[..., None] * mu).sum(0) / group_w[:, None]
    group_var = (w[..., None] * (var + mu**2)).sum(0) / group_w[:, None] - group_mean**2
    perm = match(qc.means, group_mean)
    torch.testing.assert_close(qc.weights[perm], group_w, atol=0.015, rtol=0)
    torch.testing.assert_close(qc.means[perm], group_mean, atol=0.05, rtol=0)
    torch.testing.assert_close(qc.variances[perm], group_var, rtol=0.08, atol=0)
    # fidelity: groups are nearly Gaussian, so little is lost; one component loses a lot
    _, one = q.compress(1, num_samples=5000, iters=20, seed=1, num_holdout=1000)
    assert report.kl_estimate < 0.1
    assert one.kl_estimate > 1.0 > report.kl_estimate
    assert one.holdout_loglik_q == pytest.approx(report.holdout_loglik_q, abs=0.2)


def test_compress_is_seeded_and_reports():
    q = AggregatePosterior(
        TRUE_MEANS[None].float(), torch.ones(1, 3, 3), torch.tensor([[0.2, 0.3, 0.5]])
    )
    a, ra = q.compress(2, num_samples=2000, iters=30, seed=7, num_holdout=100)
    b, rb = compress_mixture(q, 2, num_samples=2000, iters=30, seed=7, num_holdout=100)
    assert torch.equal(a.means, b.means) and ra == rb
    assert a.dtype == torch.float32
    assert isinstance(ra, CompressionReport) and ra.compression_ratio == 1.5
    assert "KL(q || q_c)" in str(ra) and ra.as_dict()["compression_ratio"] == 1.5


def test_compressed_mixture_round_trips(tmp_path):
    q = AggregatePosterior(
        TRUE_MEANS[None], torch.ones(1, 3, 3, dtype=F64), torch.full((1, 3), 1 / 3, dtype=F64)
    )
    qc, _ = q.compress(2, num_samples=1000, iters=10, num_holdout=50)
    qc.save(tmp_path / "compact.safetensors")
    r = GaussianMixture.load(tmp_path / "compact.safetensors", dim=3)
    assert torch.equal(r.means, qc.means) and r.metadata == qc.metadata


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_components": 0}, ValueError, "n_components must be an integer >= 1; got 0"),
        ({"n_components": 5, "num_samples": 4}, ValueError, "num_samples must be >= n_components"),
        ({"n_components": 2, "iters": 0}, ValueError, "iters must be an integer >= 1"),
        ({"n_components": 2, "reg_covar": -1.0}, ValueError, "reg_covar must be a number >= 0"),
        ({"n_components": 2.0}, TypeError, "n_components must be an integer"),
        ({"n_components": 2, "tol": "1e-3"}, TypeError, "tol must be a number >= 0; got '1e-3'"),
        ({"n_components": 2, "seed": -1}, ValueError, "seed must be an integer >= 0; got -1"),
    ],
)
def test_compress_rejects_bad_arguments(kwargs, error, match):
    q = AggregatePosterior(
        TRUE_MEANS[None], torch.ones(1, 3, 3, dtype=F64), torch.full((1, 3), 1 / 3, dtype=F64)
    )
    with pytest.raises(error, match=match):
        q.compress(**kwargs)


def test_compress_finds_every_cluster_in_high_dimension():
    # 11 well-separated prototypes in d = 13; plain D² seeding would often double up on one
    g = torch.Generator().manual_seed(3)
    protos = 4 * torch.randn(11, 13, generator=g, dtype=F64)
    which = torch.randint(11, (300, 5), generator=g)
    mu = protos[which] + 0.2 * torch.randn(300, 5, 13, generator=g, dtype=F64)
    q = AggregatePosterior(mu, torch.full_like(mu, 0.05), torch.full((300, 5), 0.2, dtype=F64))
    qc, _ = q.compress(11, num_samples=11_000, iters=30, seed=0, num_holdout=200)
    nearest = torch.cdist(protos, qc.means).min(1).values  # (11,)
    assert (nearest < 0.2).all(), nearest
