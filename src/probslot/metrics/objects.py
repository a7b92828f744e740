"""Object-discovery metrics on real images (DINOSAUR / OCLF conventions; the paper's Table 3).

Every function takes a predicted label map ``pred`` (b, h, w) (the argmax over slots of decoder
or attention masks, `masks_to_labels`), ground-truth label maps, and an optional ``ignore``
(b, h, w) bool of pixels that count nowhere (Pascal VOC's 255 "void" borders; COCO's crowd
regions and the pixels where instances overlap). Ground-truth label 0 is background.

* `mbo_instance` (mBO_i) and `mbo_class` (mBO_c): for each ground-truth segment (an instance,
  or all pixels of one class) the IoU of the predicted segment that overlaps it best; averaged
  over the image's segments. Background pixels count in the predicted segments' areas, ignored
  pixels count nowhere. Images without a scored segment are NaN.
* `fg_ari_ignore`: FG-ARI over the pixels that are foreground and not ignored.
* `corloc`: 1 when some ground-truth object's box is matched by a predicted segment's box with
  IoU > 0.5 (each object takes its best box), else 0; NaN without objects. Boxes are the
  pixel-inclusive bounding boxes of the segments' non-ignored pixels.
* `object_metrics`: all four per image, for each mask source (``decoder``, ``attention``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from probslot.metrics.segmentation import _check_labels, _table, fg_ari, masks_to_labels

__all__ = ["corloc", "fg_ari_ignore", "mask_boxes", "mbo_class", "mbo_instance", "object_metrics"]


def _valid(target: Tensor, ignore: Tensor | None) -> Tensor | None:
    if ignore is None:
        return None
    if not isinstance(ignore, Tensor) or ignore.dtype != torch.bool or ignore.shape != target.shape:
        got = (
            (ignore.dtype, tuple(ignore.shape))
            if isinstance(ignore, Tensor)
            else type(ignore).__name__
        )
        raise ValueError(f"ignore must be a bool tensor of shape {tuple(target.shape)}; got {got}")
    return ~ignore


def _mbo(pred: Tensor, target: Tensor, ignore: Tensor | None) -> Tensor:
    _check_labels(pred, target)
    counts, values = _table(pred, target, _valid(target, ignore))
    n_ij = counts.double()  # (b, Lt, Lp) pixels of target segment i in predicted segment j
    area_t = n_ij.sum(2, keepdim=True)
    area_p = n_ij.sum(1, keepdim=True)
    iou = n_ij / (area_t + area_p - n_ij).clamp_min(1.0)
    best = iou.max(2).values  # (b, Lt)
    scored = (area_t.squeeze(2) > 0) & (values != 0).unsqueeze(0)  # present, not background
    count = scored.sum(1)
    total = (best * scored).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def mbo_instance(pred: Tensor, instances: Tensor, ignore: Tensor | None = None) -> Tensor:
    """(b,) mBO_i: mean over ground-truth instances of their best IoU with a predicted segment.

    Args:
        pred: (b, h, w) integer predicted segment ids.
        instances: (b, h, w) integer instance label map, 0 = background.
        ignore: (b, h, w) bool pixels removed from both maps (e.g. VOC void, COCO crowd).
    """
    return _mbo(pred, instances, ignore)


def mbo_class(pred: Tensor, classes: Tensor, ignore: Tensor | None = None) -> Tensor:
    """(b,) mBO_c: as `mbo_instance` with one ground-truth segment per class (all its pixels).

    Args:
        classes: (b, h, w) integer class label map, 0 = background (VOC: SegmentationClass).
    """
    return _mbo(pred, classes, ignore)


def fg_ari_ignore(pred: Tensor, instances: Tensor, ignore: Tensor | None = None) -> Tensor:
    """(b,) FG-ARI over the foreground pixels that are not ignored (NaN without any)."""
    if ignore is not None:
        instances = torch.where(_valid(instances, ignore), instances, torch.zeros_like(instances))
    return fg_ari(pred, instances)  # background is not scored, so ignored = background here


def mask_boxes(labels: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel-inclusive boxes of every segment of each image.

    Returns:
        (boxes (b, L, 4) float64 as (y0, x0, y1, x1), present (b, L) bool, values (L,)): one row
        per label value of the batch (sorted); ``present`` says whether the image has that
        segment (among the `valid` pixels).
    """
    b, h, w = labels.shape
    values, inverse = torch.unique(labels, return_inverse=True)
    num = len(values)
    onehot = torch.nn.functional.one_hot(inverse.reshape(b, h, w), num).bool()  # (b, h, w, L)
    if valid is not None:
        onehot &= valid.unsqueeze(-1)
    rows = onehot.any(2)  # (b, h, L): the segment has a pixel in this row
    cols = onehot.any(1)  # (b, w, L)
    present = rows.any(1)  # (b, L)
    ys = torch.arange(h, device=labels.device).view(1, h, 1).double()
    xs = torch.arange(w, device=labels.device).view(1, w, 1).double()
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=labels.device)
    y0 = torch.where(rows, ys, inf).amin(1)
    y1 = torch.where(rows, ys, -inf).amax(1)
    x0 = torch.where(cols, xs, inf).amin(1)
    x1 = torch.where(cols, xs, -inf).amax(1)
    boxes = torch.stack([y0, x0, y1, x1], dim=-1)  # (b, L, 4)
    return boxes, present, values


def _box_iou(a: Tensor, b: Tensor) -> Tensor:
    """(..., La, 4), (..., Lb, 4) pixel-inclusive boxes → (..., La, Lb) IoU."""
    area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)  # noqa: E731
    lo = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    hi = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (hi - lo + 1).clamp_min(0).prod(-1)
    union = area(a)[..., :, None] + area(b)[..., None, :] - inter
    return inter / union.clamp_min(1.0)


def corloc(
    pred: Tensor, instances: Tensor, ignore: Tensor | None = None, threshold: float = 0.5
) -> Tensor:
    """(b,) correct localisation: 1.0 when the best-overlapping predicted box of some
    ground-truth instance has IoU > `threshold`, else 0.0; NaN for images without instances
    (average with ``nanmean``). The OCLF/DINOSAUR definition (``BboxCorLocMetric``)."""
    _check_labels(pred, instances)
    valid = _valid(instances, ignore)
    t_boxes, t_present, t_values = mask_boxes(instances, valid)
    p_boxes, p_present, _ = mask_boxes(pred, valid)
    t_present = t_present & (t_values != 0)
    iou = _box_iou(t_boxes, p_boxes)  # (b, Lt, Lp)
    iou = torch.where(t_present[:, :, None] & p_present[:, None, :], iou, torch.zeros_like(iou))
    hit = ((iou.amax(2) > threshold) & t_present).any(1).double()
    return torch.where(t_present.any(1), hit, torch.full_like(hit, float("nan")))


def object_metrics(
    masks: Mapping[str, Tensor],
    instances: Tensor,
    classes: Tensor | None = None,
    ignore: Tensor | None = None,
) -> dict[str, Tensor]:
    """Per-image ``{source}/mbo_i``, ``{source}/mbo_c``, ``{source}/fg_ari``, ``{source}/corloc``
    (each (b,), NaN where undefined) for soft masks (b, k, H, W) from each source
    (``decoder``, ``attention``); ``mbo_c`` only with class maps."""
    out: dict[str, Tensor] = {}
    for source, soft in masks.items():
        pred = masks_to_labels(soft, size=tuple(instances.shape[-2:]))
        out[f"{source}/mbo_i"] = mbo_instance(pred, instances, ignore)
        if classes is not None:
            out[f"{source}/mbo_c"] = mbo_class(pred, classes, ignore)
        out[f"{source}/fg_ari"] = fg_ari_ignore(pred, instances, ignore)
        out[f"{source}/corloc"] = corloc(pred, instances, ignore)
    return out
