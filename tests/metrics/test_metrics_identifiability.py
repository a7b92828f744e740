"""SMCC, slot R², SIS and compositional contrast against oracles and known answers."""

import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from probslot.metrics import (
    KRRConfig,
    compositional_contrast,
    match_slots_mapped,
    permute_slots,
    sis,
    slot_r2,
    slot_r2_details,
    smcc,
    smcc_details,
)
from probslot.metrics.regression import fit_predict_krr

M, K, D = 600, 3, 5  # pairwise-distinct sizes


def _random_perm(m: int, k: int) -> torch.Tensor:
    return torch.argsort(torch.rand(m, k), dim=1)


def _affine_copy(a: torch.Tensor, d_out: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    m, k, d = a.shape
    perm = _random_perm(m, k)
    h = torch.randn(d, d_out or d, dtype=a.dtype)
    return permute_slots(a, perm) @ h + torch.randn(d_out or d, dtype=a.dtype), perm


def test_smcc_permuted_affine_copy_is_one():
    a = torch.randn(M, K, D, dtype=torch.float64)
    b, _ = _affine_copy(a)
    assert smcc(a, b, transform="affine") == pytest.approx(1.0, abs=1e-6)
    res = smcc_details(a, b)
    assert res.per_dim.shape == (K, D) and res.per_slot.shape == (K,)
    assert res.n_train + res.n_eval == M and res.n_eval == M - int(M * 0.8)


def test_smcc_recovers_the_hidden_permutation():
    a = torch.randn(M, K, D, dtype=torch.float64)
    b, perm = _affine_copy(a)
    res = smcc_details(a, b)
    # slot a of the target was moved to position argsort(perm)[a] in b
    assert torch.equal(res.perm, torch.argsort(perm, dim=1))


def test_smcc_different_dims_with_affine_map():
    a = torch.randn(M, K, D, dtype=torch.float64)
    b, _ = _affine_copy(a, d_out=D + 2)  # injective map into a larger space
    assert smcc(a, b) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same slot dimension"):
        smcc(a, b, transform="none")


def test_smcc_identity_without_map_and_dim_matching():
    a = torch.randn(M, K, D, dtype=torch.float64)
    perm = _random_perm(M, K)
    b = permute_slots(a, perm)
    assert smcc(a, b, transform="none") == pytest.approx(1.0, abs=1e-9)
    # dimensions shuffled and sign-flipped: only the authors' |ρ| dimension matching recovers 1
    dims = torch.randperm(D)
    flipped = -b[..., dims]
    known = torch.argsort(perm, dim=1)  # raw Euclidean matching cannot see through the flip
    assert smcc(a, flipped, transform="none", match_dims=True, perm=known) == pytest.approx(
        1.0, abs=1e-9
    )
    assert smcc(a, flipped, transform="none", perm=known) < 0.5


def test_smcc_spearman_invariant_to_monotone_maps():
    a = torch.randn(M, K, D, dtype=torch.float64)
    b = permute_slots(a, _random_perm(M, K))
    # A monotone map per dimension keeps ranks; raw matching still finds the permutation.
    warped = b + 0.1 * b.pow(3)
    assert smcc(a, warped, transform="none", correlation="spearman") == pytest.approx(1.0, abs=1e-9)
    assert smcc(a, warped, transform="none", correlation="pearson") < 1.0 - 1e-4


def test_smcc_independent_noise_is_near_zero_after_chance_adjustment():
    a = torch.randn(M * 3, K, D)
    b = torch.randn(M * 3, K, D)
    res = smcc_details(a, b, chance=True)
    # per-image matching alone correlates unrelated slots; the raw score sits at that floor
    assert 0.0 < res.score < 0.45
    assert abs(res.score - res.chance) < 0.05
    assert abs(res.adjusted) < 0.08
    assert smcc(a, b, adjust_for_chance=True) == pytest.approx(res.adjusted)


def test_smcc_correlates_prediction_with_target_not_input():
    # b carries the target plus strong independent noise: correlating the KRR prediction with
    # its own input (the authors' bug) would score near 1; against the target it cannot.
    a = torch.randn(M, K, D, dtype=torch.float64)
    b = a + 3.0 * torch.randn(M, K, D, dtype=torch.float64)
    score = smcc(a, b, transform="krr", match_space="raw")
    assert score < 0.5


def test_smcc_golden_value():
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(200, 2, 3, generator=gen, dtype=torch.float64)
    b = a @ torch.randn(3, 3, generator=gen, dtype=torch.float64) + 0.5 * torch.randn(
        200, 2, 3, generator=gen, dtype=torch.float64
    )
    r1 = smcc(a, b)
    r2 = smcc(a, b)
    assert r1 == r2  # deterministic for a fixed seed
    assert 0.5 < r1 < 1.0


@pytest.mark.parametrize("n_train", [50, 120])
def test_krr_exact_matches_sklearn(n_train):
    gen = np.random.default_rng(3)
    x = gen.normal(size=(n_train, 4))
    y = np.sin(x[:, :2]) + 0.1 * gen.normal(size=(n_train, 2))
    xe = gen.normal(size=(31, 4))
    ref = KernelRidge(kernel="rbf", alpha=1.0).fit(x, y).predict(xe)
    got = fit_predict_krr(
        torch.from_numpy(x)[None], torch.from_numpy(y)[None], torch.from_numpy(xe)[None]
    )[0]
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-8)


def test_nystrom_close_to_exact():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1500, 6, generator=gen, dtype=torch.float64)
    y = torch.sin(x[..., :3])
    xe = torch.randn(1, 200, 6, generator=gen, dtype=torch.float64)
    exact = fit_predict_krr(x, y, xe, KRRConfig(exact_max=10_000))
    approx = fit_predict_krr(x, y, xe, KRRConfig(exact_max=100, n_components=700))
    assert (exact - approx).abs().max() < 0.05


def test_slot_r2_matches_sklearn_pipeline():
    # After matching, slot_r2 = mean over slots of sklearn r2_score(KRR(scaled b) → scaled a).
    a = torch.randn(400, K, D, dtype=torch.float64)
    b = permute_slots(torch.tanh(a @ torch.randn(D, D, dtype=torch.float64)), _random_perm(400, K))
    res = slot_r2_details(a, b, seed=None)
    bm = permute_slots(b, res.perm)
    n_tr = res.n_train
    ref = []
    for k in range(K):
        xa, xb = a[:, k].numpy(), bm[:, k].numpy()
        sa, sb = StandardScaler().fit(xa[:n_tr]), StandardScaler().fit(xb[:n_tr])
        model = KernelRidge(kernel="rbf", alpha=1.0).fit(
            sb.transform(xb[:n_tr]), sa.transform(xa[:n_tr])
        )
        ref.append(r2_score(sa.transform(xa[n_tr:]), model.predict(sb.transform(xb[n_tr:]))))
    assert res.score == pytest.approx(float(np.mean(ref)), abs=1e-8)
    np.testing.assert_allclose(res.per_slot.numpy(), ref, atol=1e-8)


def test_slot_r2_values():
    a = torch.randn(M, K, D, dtype=torch.float64)
    b, _ = _affine_copy(a)
    assert slot_r2(a, b) > 0.6  # RBF ridge with α = 1 underfits a linear map a little
    assert slot_r2(a, b, transform="affine") == pytest.approx(1.0, abs=1e-9)
    assert abs(slot_r2(a, torch.randn(M, K, D, dtype=torch.float64))) < 0.1


def test_mapped_matching_beats_raw_matching_across_frames():
    a = torch.randn(M, K, D, dtype=torch.float64)
    b, perm = _affine_copy(a)
    mapped = match_slots_mapped(a, b).perm
    assert torch.equal(mapped, torch.argsort(perm, dim=1))


def test_sis_known_answers():
    m, k, f, d = 700, 3, 2, 4
    z = torch.randn(m, k, f, dtype=torch.float64)
    lift = torch.randn(f, d, dtype=torch.float64)
    perm = _random_perm(m, k)
    good = permute_slots(z @ lift, perm)
    res = sis(z, good, transform="affine", perm=torch.argsort(perm, dim=1))
    assert res.score == pytest.approx(1.0, abs=1e-6)
    assert res.r2_matched.shape == (k,) and (res.r2_other < 0.05).all()
    # every slot holds the scene mean: any slot predicts any object equally → SIS ≈ 0
    shared = z.mean(1, keepdim=True).expand(m, k, f) @ lift + 0.01 * torch.randn(
        m, k, d, dtype=torch.float64
    )
    ident = torch.arange(k).expand(m, k)
    bad = sis(z, shared, transform="affine", perm=ident)
    assert abs(bad.score) < 0.1


def test_compositional_contrast_additive_disjoint_is_zero():
    k, d, side = 3, 4, 5
    n = side * k
    weights = torch.randn(k, d, side)

    def decoder(slots):  # slot i writes only to pixels [i*side, (i+1)*side)
        return torch.tanh(torch.einsum("kd,kdn->kn", slots, weights)).reshape(n)

    slots = torch.randn(2, k, d)
    for mode in ("rev", "fwd"):
        c = compositional_contrast(decoder, slots, mode=mode)
        assert c.shape == (2,)
        torch.testing.assert_close(c, torch.zeros(2))


def test_compositional_contrast_through_attention_forward_equals_reverse_mode():
    """Fused attention kernels have no forward-mode derivative; the metric uses the math kernel,
    so a transformer decoder gets the same contrast in both modes."""
    k, d, n = 3, 4, 6
    proj = torch.randn(d, 8)
    queries = torch.randn(1, n, 8)

    def decoder(slots):  # pixel queries attend to the slots (as the transformer decoder)
        kv = (slots @ proj)[None]
        return torch.nn.functional.scaled_dot_product_attention(queries, kv, kv).reshape(-1)

    slots = torch.randn(2, k, d)
    fwd = compositional_contrast(decoder, slots, mode="fwd")
    torch.testing.assert_close(fwd, compositional_contrast(decoder, slots, mode="rev"))
    assert torch.all(fwd > 0)  # every output mixes every slot


def test_compositional_contrast_mixing_matches_hand_computation():
    k, d, n = 2, 3, 7
    w = torch.randn(n, k * d, dtype=torch.float64)

    def decoder(slots):  # linear mixing: Jacobian is w itself
        return w @ slots.reshape(-1)

    slots = torch.randn(k, d, dtype=torch.float64)
    g = w.reshape(n, k, d).norm(dim=-1)  # (n, k)
    expected = (g[:, 0] * g[:, 1]).sum()
    got = compositional_contrast(decoder, slots)
    assert got.ndim == 0 and got.item() > 0
    torch.testing.assert_close(got, expected)


def test_bad_inputs_raise_clear_errors():
    a = torch.randn(M, K, D)
    with pytest.raises(ValueError, match="same number of images and slots"):
        smcc(a, torch.randn(M, K + 1, D))
    with pytest.raises(ValueError, match=r"needs at least \d+ images"):
        smcc(a[:6], a[:6])
    with pytest.raises(ValueError, match=r"\(m images, k slots, d dims\)"):
        slot_r2(a[0], a[0])
    with pytest.raises(ValueError, match="transform must be"):
        smcc(a, a, transform="kernel")
    with pytest.raises(ValueError, match="train_fraction"):
        smcc(a, a, train_fraction=1.5)
    with pytest.raises(ValueError, match="permutation of 0..k-1"):
        smcc(a, a, perm=torch.zeros(M, K, dtype=torch.long))
    with pytest.raises(ValueError, match="slots must have shape"):
        compositional_contrast(lambda s: s, torch.randn(5))


def test_smcc_krr_and_shared_map_and_sis_without_perm():
    a = torch.randn(M, K, D, dtype=torch.float64)
    b, _ = _affine_copy(a)
    assert smcc(a, b, transform="krr") > 0.8  # RBF ridge (α = 1) underfits linear maps a little
    assert smcc(a, b, map_per_slot=False) == pytest.approx(1.0, abs=1e-6)
    assert smcc(a, b, correlation="spearman") == pytest.approx(1.0, abs=1e-6)
    res = sis(a, b, transform="affine")  # mapped matching, no perm needed
    assert res.score == pytest.approx(1.0, abs=1e-6)


def test_min_images_is_the_exact_threshold_of_the_split() -> None:
    from probslot.metrics import min_images, train_eval_split

    for min_train, fraction in [(7, 0.8), (66, 0.8), (3, 0.5), (11, 0.9)]:
        need = min_images(min_train, fraction)
        train, held = train_eval_split(need, fraction, 0, min_train, "x")
        assert len(train) >= min_train and len(held) >= 2
        with pytest.raises(ValueError, match=rf"x needs at least {need} images"):
            train_eval_split(need - 1, fraction, 0, min_train, "x")
    assert min_images(7, 0.8) == 9 and min_images(66, 0.8) == 83
