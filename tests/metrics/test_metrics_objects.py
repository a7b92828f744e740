"""Object-discovery metrics (mBO_i, mBO_c, FG-ARI with ignore, CorLoc) against direct references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from probslot.metrics import (
    corloc,
    fg_ari_ignore,
    mask_boxes,
    mbo,
    mbo_class,
    mbo_instance,
    object_metrics,
)

B, H, W = 4, 7, 9  # pairwise distinct


def random_maps(seed: int = 0):
    g = np.random.default_rng(seed)
    pred = torch.from_numpy(g.integers(0, 4, (B, H, W)))
    inst = torch.from_numpy(g.integers(0, 5, (B, H, W)))
    ignore = torch.from_numpy(g.random((B, H, W)) < 0.2)
    inst[2] = 0  # an image without objects
    return pred, inst, ignore


def ref_mbo(pred: np.ndarray, target: np.ndarray, ignore: np.ndarray) -> float:
    """Per image: each target segment > 0 takes the best IoU over predicted segments."""
    keep = ~ignore
    ious = []
    for t in np.unique(target[keep]):
        if t == 0:
            continue
        seg = (target == t) & keep
        best = 0.0
        for p in np.unique(pred[keep]):
            pm = (pred == p) & keep
            best = max(best, (seg & pm).sum() / (seg | pm).sum())
        ious.append(best)
    return float(np.mean(ious)) if ious else math.nan


def ref_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), xs.min(), ys.max(), xs.max()


def ref_box_iou(a, b) -> float:
    inter_h = min(a[2], b[2]) - max(a[0], b[0]) + 1
    inter_w = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(inter_h, 0) * max(inter_w, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def ref_corloc(pred, target, ignore, threshold=0.5) -> float:
    keep = ~ignore
    objects = [t for t in np.unique(target[keep]) if t != 0]
    if not objects:
        return math.nan
    boxes = [ref_box((pred == p) & keep) for p in np.unique(pred[keep])]
    for t in objects:
        box = ref_box((target == t) & keep)
        if max(ref_box_iou(box, pb) for pb in boxes) > threshold:
            return 1.0
    return 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mbo_instance_matches_the_reference_with_ignore(seed):
    pred, inst, ignore = random_maps(seed)
    got = mbo_instance(pred, inst, ignore)
    for i in range(B):
        expected = ref_mbo(pred[i].numpy(), inst[i].numpy(), ignore[i].numpy())
        if math.isnan(expected):
            assert math.isnan(got[i])
        else:
            assert got[i].item() == pytest.approx(expected, abs=1e-12)


def test_mbo_without_ignore_equals_the_existing_mbo():
    pred, inst, _ = random_maps(3)
    torch.testing.assert_close(mbo_instance(pred, inst), mbo(pred, inst), equal_nan=True)


def test_mbo_class_merges_instances_of_one_class():
    """Two instances of class 1 and one of class 2: mBO_c scores the union of class 1."""
    inst = torch.tensor([[[1, 1, 2, 2, 3, 3]]])
    classes = torch.tensor([[[1, 1, 1, 1, 2, 2]]])
    pred = torch.tensor([[[0, 0, 0, 0, 1, 1]]])  # one segment covers both class-1 instances
    assert mbo_instance(pred, inst).item() == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert mbo_class(pred, classes).item() == pytest.approx(1.0)
    pred_voc = torch.from_numpy(np.random.default_rng(4).integers(0, 3, (1, H, W)))
    cls = torch.from_numpy(np.random.default_rng(5).integers(0, 4, (1, H, W)))
    void = cls == 3  # VOC's 255 border, here label 3, ignored
    expected = ref_mbo(
        pred_voc[0].numpy(), np.where(void[0].numpy(), 0, cls[0].numpy()), void[0].numpy()
    )
    assert mbo_class(pred_voc, cls, void).item() == pytest.approx(expected, abs=1e-12)


def test_ignored_pixels_leave_the_predicted_areas_too():
    """Ignoring a pixel changes the union of the predicted segment that covers it."""
    inst = torch.tensor([[[1, 1, 0, 0]]])
    pred = torch.tensor([[[0, 0, 0, 1]]])
    assert mbo_instance(pred, inst).item() == pytest.approx(2 / 3)
    ignore = torch.tensor([[[False, False, True, False]]])
    assert mbo_instance(pred, inst, ignore).item() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_fg_ari_ignore_matches_sklearn_on_the_scored_pixels(seed):
    pred, inst, ignore = random_maps(seed)
    got = fg_ari_ignore(pred, inst, ignore)
    for i in range(B):
        scored = (inst[i] > 0) & ~ignore[i]
        if not scored.any():
            assert math.isnan(got[i])
            continue
        expected = adjusted_rand_score(inst[i][scored].numpy(), pred[i][scored].numpy())
        assert got[i].item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_corloc_matches_the_reference(seed):
    g = np.random.default_rng(seed)
    inst = torch.zeros(B, H, W, dtype=torch.long)
    pred = torch.zeros(B, H, W, dtype=torch.long)
    for i in range(B):  # rectangles, so boxes and masks differ in interesting ways
        for label in (1, 2):
            y, x = g.integers(0, H - 2), g.integers(0, W - 2)
            inst[i, y : y + g.integers(1, 4), x : x + g.integers(1, 5)] = label
            y, x = g.integers(0, H - 2), g.integers(0, W - 2)
            pred[i, y : y + g.integers(1, 5), x : x + g.integers(1, 5)] = label
    inst[3] = 0
    ignore = torch.from_numpy(g.random((B, H, W)) < 0.1)
    got = corloc(pred, inst, ignore)
    for i in range(B):
        expected = ref_corloc(pred[i].numpy(), inst[i].numpy(), ignore[i].numpy())
        assert (math.isnan(got[i]) and math.isnan(expected)) or got[i].item() == expected


def test_corloc_threshold_is_strict():
    inst = torch.tensor([[[1, 1, 0, 0]]])
    pred = torch.tensor([[[1, 1, 1, 1]]])  # box IoU exactly 0.5
    assert corloc(pred, inst).item() == 0.0
    assert corloc(pred, inst, threshold=0.49).item() == 1.0


def test_mask_boxes_are_pixel_inclusive():
    labels = torch.tensor([[[0, 0, 0], [0, 5, 5], [0, 5, 0]]])
    boxes, present, values = mask_boxes(labels)
    assert values.tolist() == [0, 5] and present.tolist() == [[True, True]]
    assert boxes[0, 1].tolist() == [1.0, 1.0, 2.0, 2.0]


def test_object_metrics_reports_every_source():
    _, inst, ignore = random_maps(0)
    soft = torch.rand(B, 3, H, W).softmax(1)
    out = object_metrics({"decoder": soft, "attention": soft.flip(1)}, inst, inst, ignore)
    assert sorted(out) == sorted(
        f"{s}/{m}" for s in ("decoder", "attention") for m in ("mbo_i", "mbo_c", "fg_ari", "corloc")
    )
    assert all(v.shape == (B,) for v in out.values())
    assert math.isnan(out["decoder/mbo_i"][2])  # the image without objects


def test_bad_ignore_mask():
    pred, inst, _ = random_maps(0)
    with pytest.raises(ValueError, match=r"ignore must be a bool tensor of shape \(4, 7, 9\)"):
        mbo_instance(pred, inst, torch.zeros(B, H, W))
