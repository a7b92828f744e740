"""Likelihoods: the discretised Gaussian against a direct scipy formula, MSE, errors."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from probslot.models.likelihood import LIKELIHOODS, MSE, DiscretisedGaussian, log_diff_ndtr

B, H, W = 2, 5, 7
LEVELS = torch.arange(256, dtype=torch.float64) / 127.5 - 1.0  # the 256 bin centres in [−1, 1]


def direct_nll(mu, x, sigma):
    """−mean log p(x) from the definition: normal CDF differences over bins of width 2/255."""
    mu, x = mu.double().numpy(), x.double().numpy()
    upper = np.where(x > 1 - 1 / 255, np.inf, x + 1 / 255)
    lower = np.where(x < -1 + 1 / 255, -np.inf, x - 1 / 255)
    zu, zl = (upper - mu) / sigma, (lower - mu) / sigma
    # Same mass, evaluated in the upper tail when the bin lies above the mean (float64 precision).
    p = np.where(zl > 0, norm.sf(zl) - norm.sf(zu), norm.cdf(zu) - norm.cdf(zl))
    return -np.log(p).mean()


def random_levels(shape, generator):
    idx = torch.randint(0, 256, shape, generator=generator)
    idx.view(-1)[:4] = torch.tensor([0, 255, 0, 255])  # both open edge bins appear
    return LEVELS[idx].float()


@pytest.mark.parametrize("sigma", [0.1, 0.03, 0.7])
def test_dgauss_matches_direct_formula(sigma):
    g = torch.Generator().manual_seed(3)
    lik = DiscretisedGaussian(init_scale=sigma)
    x = random_levels((B, 3, H, W), g)
    mu = x + 0.2 * torch.randn(B, 3, H, W, generator=g)
    got = lik.nll(mu, x).item()
    assert got == pytest.approx(direct_nll(mu, x, sigma), rel=1e-4)


def test_dgauss_is_a_distribution_over_the_256_levels():
    lik = DiscretisedGaussian(init_scale=0.05)
    mu = torch.tensor([-1.3, -0.4, 0.0, 0.97, 2.0]).view(1, 1, 1, 5).expand(1, 3, 256, 5)
    x = LEVELS.float().view(1, 1, 256, 1).expand(1, 3, 256, 5)
    total = lik.log_prob(mu.contiguous(), x.contiguous()).exp().sum(dim=2)  # sum over levels
    torch.testing.assert_close(total, torch.ones(1, 3, 5), atol=1e-5, rtol=0)


def test_dgauss_quantises_continuous_targets():
    lik = DiscretisedGaussian()
    mu = torch.zeros(1, 3, 2, 2)
    x = torch.full((1, 3, 2, 2), 0.3)
    nearest = torch.full_like(x, round(1.3 * 127.5) / 127.5 - 1)
    assert lik.nll(mu, x).item() == pytest.approx(lik.nll(mu, nearest).item(), abs=1e-6)


def test_dgauss_scale_is_learned_and_shared():
    lik = DiscretisedGaussian()
    assert [n for n, _ in lik.named_parameters()] == ["log_scale"]
    assert lik.log_scale.numel() == 1
    assert lik.scale.item() == pytest.approx(0.1)
    x = random_levels((B, 3, H, W), torch.Generator().manual_seed(0))
    lik.nll(x + 0.5, x).backward()
    assert lik.log_scale.grad.item() < 0  # errors larger than σ ask for a larger σ
    assert DiscretisedGaussian(per_channel=True).log_scale.shape == (1, 3, 1, 1)


def test_dgauss_autoregressive_coefficients_shift_green_and_blue_means():
    g = torch.Generator().manual_seed(1)
    lik = DiscretisedGaussian(autoregressive=True)
    with torch.no_grad():
        lik.coeffs.copy_(torch.tensor([0.5, -0.25, 0.75]))
    x = random_levels((B, 3, H, W), g)
    mu = 0.3 * torch.randn(B, 3, H, W, generator=g)
    shifted = mu.clone()
    shifted[:, 1] += 0.5 * x[:, 0]
    shifted[:, 2] += -0.25 * x[:, 0] + 0.75 * x[:, 1]
    assert lik.nll(mu, x).item() == pytest.approx(direct_nll(shifted, x, 0.1), rel=1e-4)
    lik.nll(mu, x).backward()
    assert (lik.coeffs.grad != 0).all()


def test_dgauss_stable_far_in_the_tails():
    lik = DiscretisedGaussian(init_scale=0.01)
    x = torch.full((1, 3, 1, 1), 0.5)
    mu = torch.full((1, 3, 1, 1), -0.9, requires_grad=True)  # 140 σ away
    nll = lik.nll(mu, x)
    assert torch.isfinite(nll)
    nll.backward()
    assert torch.isfinite(mu.grad).all() and (mu.grad < 0).all()


def test_log_diff_ndtr_matches_scipy():
    a = torch.tensor([-30.0, -2.0, 0.5, 3.0, 9.0], dtype=torch.float64)
    b = a - torch.tensor([0.5, 1.0, 2.0, 0.01, 0.1], dtype=torch.float64)
    expected = [
        math.log(norm.sf(bb) - norm.sf(aa)) if bb > 0 else math.log(norm.cdf(aa) - norm.cdf(bb))
        for aa, bb in zip(a.tolist(), b.tolist())
    ]
    torch.testing.assert_close(
        log_diff_ndtr(a, b), torch.tensor(expected, dtype=torch.float64), rtol=1e-7, atol=0
    )


def test_mse_is_mean_squared_error():
    g = torch.Generator().manual_seed(2)
    r, t = torch.randn(B, 3, H, W, generator=g), torch.randn(B, 3, H, W, generator=g)
    assert MSE().nll(r, t).item() == pytest.approx(((r - t) ** 2).mean().item(), rel=1e-6)


@pytest.mark.parametrize("name", LIKELIHOODS.available())
def test_likelihood_shape_mismatch(name):
    with pytest.raises(ValueError, match=r"same shape .* got \(2, 3, 5, 7\) and \(2, 3, 7, 5\)"):
        LIKELIHOODS.build(name).nll(torch.zeros(B, 3, H, W), torch.zeros(B, 3, W, H))


def test_likelihood_bad_options_and_names():
    with pytest.raises(ValueError, match="init_scale must be a positive float; got -0.1"):
        DiscretisedGaussian(init_scale=-0.1)
    with pytest.raises(ValueError, match=r"unknown likelihood 'dgaus'\. Did you mean 'dgauss'\?"):
        LIKELIHOODS.get("dgaus")


@pytest.mark.parametrize("name", LIKELIHOODS.available())
def test_likelihoods_compute_in_float32_for_half_inputs(name):
    lik = LIKELIHOODS.build(name)
    g = torch.Generator().manual_seed(4)
    r, t = torch.rand(B, 3, H, W, generator=g) * 2 - 1, torch.rand(B, 3, H, W, generator=g) * 2 - 1
    r_half = r.bfloat16()
    out = lik.nll(r_half, t)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(lik.nll(r_half.float(), t).item(), rel=1e-6)
