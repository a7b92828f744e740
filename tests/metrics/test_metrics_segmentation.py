"""ARI / FG-ARI / mBO against sklearn and hand-written references; masks → labels; MSE."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from probslot.metrics import (
    ARIMetric,
    MBOMetric,
    MSEMetric,
    ari,
    contingency,
    fg_ari,
    fg_mse,
    masks_to_labels,
    mbo,
    mse,
)

B, H, W = 5, 7, 11


def _sk_ari(pred, target, fg=False):
    out = []
    for p, t in zip(pred.numpy(), target.numpy()):
        keep = (t > 0) if fg else np.ones_like(t, dtype=bool)
        out.append(adjusted_rand_score(t[keep], p[keep]))
    return np.array(out)


@pytest.mark.parametrize("fg", [False, True])
@pytest.mark.parametrize("n_pred,n_true", [(2, 3), (6, 4), (13, 2)])
def test_ari_matches_sklearn(fg, n_pred, n_true):
    pred = torch.randint(0, n_pred, (B, H, W)) * 7 - 3  # arbitrary, non-contiguous label values
    target = torch.randint(0, n_true, (B, H, W))
    got = ari(pred, target, foreground_only=fg)
    assert got.shape == (B,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), _sk_ari(pred, target, fg), atol=1e-6)


def test_ari_structured_cases_and_degenerate():
    base = torch.zeros(H, W, dtype=torch.long)
    base[:, 5:] = 1
    base[3:, :] += 2
    target = base.expand(4, H, W)
    pred = torch.stack(
        [
            base * 5 + 1,  # relabelled identical partition → 1
            torch.zeros(H, W, dtype=torch.long),  # one cluster vs several → 0
            torch.arange(H * W).reshape(H, W),  # every pixel its own cluster
            base.flip(-1),
        ]
    )
    np.testing.assert_allclose(ari(pred, target).numpy(), _sk_ari(pred, target), atol=1e-6)
    one = torch.zeros(2, H, W, dtype=torch.long)
    assert ari(one, one).tolist() == [1.0, 1.0]  # one cluster each: sklearn gives 1.0
    # no foreground at all: nothing to score, so NaN (sklearn would say 1.0 on empty arrays)
    assert torch.isnan(fg_ari(one, one)).all()
    assert torch.isnan(ari(one, one, foreground_only=True)).all()
    metric = ARIMetric(foreground_only=True)
    metric.update(one, one)
    assert torch.isnan(metric.compute())


def test_fg_ari_matches_sklearn_on_foreground_pixels_and_is_nan_without_foreground():
    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 4, (B, H, W), generator=g)
    target = torch.randint(0, 3, (B, H, W), generator=g)
    pred[1] = target[1] * 2 + 1  # a relabelled perfect segmentation of the foreground
    target[3] = 0  # an image without foreground
    got = fg_ari(pred, target)
    assert got.shape == (B,) and got.dtype == torch.float64
    for i in range(B):
        fg = target[i] > 0
        if not fg.any():
            assert torch.isnan(got[i]), "an image without foreground must score NaN"
            continue
        want = adjusted_rand_score(target[i][fg].numpy(), pred[i][fg].numpy())
        assert got[i].item() == pytest.approx(want, abs=1e-12)
    assert got[1].item() == pytest.approx(1.0)
    # the NaN convention: nanmean over the batch = mean over images with foreground
    has_fg = (target > 0).flatten(1).any(1)
    assert got.nanmean().item() == pytest.approx(got[has_fg].mean().item())
    metric = ARIMetric(foreground_only=True)
    metric.update(pred, target)
    assert metric.compute().item() == pytest.approx(got.nanmean().item())


def test_fg_ari_ignores_background_errors():
    target = torch.zeros(2, 3, 5, dtype=torch.long)
    target[0, :, :2] = 1
    target[0, :, 3:] = 2
    target[1, 0, 0] = 1  # a single foreground pixel: one pair-free cluster, sklearn gives 1.0
    pred = torch.zeros_like(target)
    pred[0, :, 2:] = 1  # background column 2 is wrong, foreground is split correctly
    pred[1] = 4
    assert fg_ari(pred, target).tolist() == [1.0, 1.0]


def test_ari_metric_accumulates_per_image_mean():
    pred = torch.randint(0, 4, (B, H, W))
    target = torch.randint(0, 3, (B, H, W))
    metric = ARIMetric(foreground_only=True)
    metric.update(pred[:2], target[:2])
    metric.update(pred[2:], target[2:])
    ref = _sk_ari(pred, target, fg=True).mean()
    assert metric.compute().item() == pytest.approx(ref, abs=1e-6)


def test_contingency_counts():
    pred = torch.randint(0, 3, (B, H, W))
    target = torch.randint(0, 2, (B, H, W))
    table = contingency(pred, target)
    for i in range(B):
        for t in range(2):
            for p in range(3):
                assert table[i, t, p] == ((target[i] == t) & (pred[i] == p)).sum()


def _mbo_reference(pred, target):
    out = []
    for p, t in zip(pred, target):
        ious = []
        for lab in t.unique():
            if lab == 0:
                continue
            gt = t == lab
            best = max(((gt & (p == q)).sum() / (gt | (p == q)).sum()).item() for q in p.unique())
            ious.append(best)
        out.append(np.mean(ious) if ious else np.nan)
    return np.array(out)


def test_mbo_matches_reference():
    pred = torch.randint(0, 5, (B, H, W))
    target = torch.randint(0, 4, (B, H, W))
    target[0] = 0  # no object: NaN, skipped by the metric
    got = mbo(pred, target)
    np.testing.assert_allclose(got.numpy(), _mbo_reference(pred, target), atol=1e-12)
    metric = MBOMetric()
    metric.update(pred, target)
    assert metric.compute().item() == pytest.approx(np.nanmean(_mbo_reference(pred, target)))
    assert mbo(target, target)[1:].eq(1.0).all()


def test_mbo_ignore_index_drops_void_pixels():
    target = torch.ones(1, H, W, dtype=torch.long)
    target[0, :, :3] = 255
    pred = torch.zeros(1, H, W, dtype=torch.long)
    assert mbo(pred, target, ignore_index=255).item() == pytest.approx(1.0)
    assert mbo(pred, target).item() < 1.0


def test_masks_to_labels_shapes():
    masks = torch.rand(B, 3, H, W)
    labels = masks_to_labels(masks)
    assert labels.shape == (B, H, W) and torch.equal(labels, masks.argmax(1))
    assert torch.equal(masks_to_labels(masks.unsqueeze(2)), labels)
    tokens = torch.rand(B, 3, 16)
    assert masks_to_labels(tokens, size=(H, W)).shape == (B, H, W)
    with pytest.raises(ValueError, match="square token grid"):
        masks_to_labels(torch.rand(B, 3, 15))


def test_segmentation_bad_input():
    with pytest.raises(TypeError, match="integer labels"):
        ari(torch.rand(B, H, W), torch.zeros(B, H, W, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        ari(torch.zeros(B, H, W, dtype=torch.long), torch.zeros(B, W, H, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(b, h, w\)"):
        mbo(torch.zeros(H, W, dtype=torch.long), torch.zeros(H, W, dtype=torch.long))
    with pytest.raises(ValueError, match=r"pred must have shape \(b, h, w\); got \(2, 3\)"):
        fg_ari(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="pred must be a torch.Tensor"):
        fg_ari([[0]], torch.zeros(1, 1, 1, dtype=torch.long))


def test_mse_full_and_foreground():
    recon, target = torch.rand(B, 3, H, W), torch.rand(B, 3, H, W)
    labels = torch.randint(0, 3, (B, H, W))
    full = mse(recon, target)
    torch.testing.assert_close(full, ((recon - target) ** 2).double().mean((1, 2, 3)))
    fg = fg_mse(recon, target, labels)
    for i in range(B):
        keep = labels[i] > 0
        ref = ((recon[i] - target[i]) ** 2)[:, keep].double().mean()
        assert fg[i].item() == pytest.approx(ref.item())
    metric = MSEMetric(foreground_only=True)
    metric.update(recon, target, labels)
    assert metric.compute().item() == pytest.approx(fg.mean().item())
    with pytest.raises(ValueError, match="needs labels"):
        metric.update(recon, target)
    with pytest.raises(ValueError, match=r"\(b, c, h, w\)"):
        mse(recon, target[:, :2])
