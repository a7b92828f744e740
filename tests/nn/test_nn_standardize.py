"""`standardize=True`: EM runs in per-image standardised token coordinates, outputs are mapped back."""

import pytest
import torch

from grouping_helpers import flat_psa  # noqa: E402


def _clustered(seed: int, b: int = 3, n: int = 48, d: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(3, d, generator=g)
    labels = torch.randint(0, 3, (b, n), generator=g)
    return centres[labels] + 0.3 * torch.randn(b, n, d, generator=g)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_outputs_are_the_moments_of_the_attention_in_the_original_token_space(
    temperature: float,
) -> None:
    x = _clustered(0).double()
    m = flat_psa(
        4, 8, iters=3, variant="base", standardize=True, temperature=temperature, min_var=1e-9
    ).double()
    with torch.no_grad():
        post = m(x)
        v = m.norm_inputs(x)  # base variant: the values are the normalised tokens
    # dense reference: μ_k = Σ_n Â_nk v_n, σ²_k = Σ_n Â_nk (v_n − μ_k)², Â = A normalised over tokens
    a_hat = post.attn / post.attn.sum(-1, keepdim=True)  # (b, k, n)
    mu = torch.einsum("bkn,bnd->bkd", a_hat, v)
    var = torch.einsum("bkn,bknd->bkd", a_hat, (v[:, None] - mu[:, :, None]).square())
    torch.testing.assert_close(post.mu, mu)
    torch.testing.assert_close(post.var, var)
    torch.testing.assert_close(post.pi.sum(-1), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(post.pi, post.attn.mean(-1))


def test_standardised_em_is_invariant_to_a_per_image_affine_map_of_the_values() -> None:
    """Without LayerNorm in the way (identity norm), scaling and shifting each image's features
    changes nothing in the responsibilities: the EM sees the same standardised tokens."""
    x = _clustered(1).double()
    m = flat_psa(4, 8, iters=3, variant="base", standardize=True).double()
    m.norm_inputs = torch.nn.Identity()
    scale = torch.rand(3, 1, 8, dtype=torch.float64) * 5 + 0.2
    shift = torch.randn(3, 1, 8, dtype=torch.float64) * 10
    with torch.no_grad():
        torch.manual_seed(2)
        a = m(x)
        torch.manual_seed(2)
        b = m(x * scale + shift)
    # exact up to the 1e-6 variance floor of the standardisation (not scale-invariant)
    tol = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(b.attn, a.attn, **tol)
    torch.testing.assert_close(b.pi, a.pi, **tol)
    torch.testing.assert_close(b.mu, a.mu * scale + shift, **tol)
    torch.testing.assert_close(b.var, a.var * scale.square(), **tol)


def test_padded_tokens_do_not_change_the_result() -> None:
    x = _clustered(3, b=2, n=30)
    padded = torch.cat([x, 100 * torch.randn(2, 10, 8)], dim=1)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[:, :30] = True
    m = flat_psa(3, 8, iters=3, variant="base", standardize=True)
    with torch.no_grad():
        torch.manual_seed(4)
        a = m(x)
        torch.manual_seed(4)
        b = m(padded, mask=mask)
    torch.testing.assert_close(b.mu, a.mu)
    torch.testing.assert_close(b.pi, a.pi)
    assert (b.attn[:, :, 30:] == 0).all()


def test_standardize_trains_every_parameter() -> None:
    m = flat_psa(4, 8, iters=2, standardize=True)
    post = m(torch.randn(2, 20, 8))
    (post.mu.square().sum() + post.var.sum() + post.pi.square().sum()).backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not missing, missing
