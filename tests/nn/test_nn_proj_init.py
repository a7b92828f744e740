"""PSA's projection init: the untrained module is exact EM, so slots do not collapse at the start."""

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from grouping_helpers import flat_psa  # noqa: E402


def _clustered_tokens(b: int = 6, n: int = 96, d: int = 16, clusters: int = 3) -> tuple:
    g = torch.Generator().manual_seed(3)
    centres = 2.0 * torch.randn(clusters, d, generator=g)
    labels = torch.randint(0, clusters, (b, n), generator=g)
    tokens = centres[labels] + 0.3 * torch.randn(b, n, d, generator=g)
    return tokens, labels


def _mean_ari(attn: torch.Tensor, labels: torch.Tensor) -> float:
    pred = attn.argmax(1)  # (b, n)
    scores = [adjusted_rand_score(t.numpy(), p.numpy()) for t, p in zip(labels, pred)]
    return sum(scores) / len(scores)


def test_base_with_identity_query_equals_exact_em_at_init() -> None:
    tokens, _ = _clustered_tokens()
    with_q = flat_psa(5, 16, iters=3, variant="base")
    without_q = flat_psa(5, 16, iters=3, variant="base", query_proj=False)
    without_q.load_state_dict({k: v for k, v in with_q.state_dict().items() if "to_q" not in k})
    torch.manual_seed(7)
    a = with_q(tokens)
    torch.manual_seed(7)
    b = without_q(tokens)
    torch.testing.assert_close(a.mu, b.mu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.pi, b.pi, rtol=1e-5, atol=1e-6)


def test_proj_init_keys_and_values_tied() -> None:
    m = flat_psa(4, 16, slot_dim=16, variant="proj")
    torch.testing.assert_close(m.to_q.weight, torch.eye(16))
    torch.testing.assert_close(m.to_k.weight, m.to_v.weight)
    torch.testing.assert_close(m.to_k.weight @ m.to_k.weight.T, torch.eye(16), atol=1e-5, rtol=0)
    assert not torch.equal(
        flat_psa(4, 16, variant="proj", proj_init="torch").to_q.weight,
        torch.eye(16),
    )


@pytest.mark.parametrize("variant", ["base", "proj"])
def test_em_init_separates_clusters_and_prunes_the_spare_slot(variant: str) -> None:
    tokens, labels = _clustered_tokens()
    em = flat_psa(4, 16, iters=3, variant=variant)
    torch_init = flat_psa(4, 16, iters=3, variant=variant, proj_init="torch")
    with torch.no_grad():
        post_em, post_torch = em(tokens), torch_init(tokens)
    # exact EM at init finds the 3 clusters; PyTorch's init collapses onto few slots
    assert _mean_ari(post_em.attn, labels) > 0.7
    assert _mean_ari(post_torch.attn, labels) < _mean_ari(post_em.attn, labels) - 0.3
    # three clusters, four slots: at least 3 slots carry mass in every image
    assert (post_em.pi > 0.1).sum(-1).float().mean() >= 2.5


def test_proj_init_rejects_unknown_choice() -> None:
    with pytest.raises(
        ValueError, match=r"proj_init must be one of \['em', 'torch'\]; got 'xavier'"
    ):
        flat_psa(3, 8, proj_init="xavier")
