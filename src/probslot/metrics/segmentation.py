"""Segmentation metrics on integer label maps: ARI / FG-ARI and mean best overlap (mBO).

All functions are batched: per-image contingency tables are built for the whole batch with one
`bincount` (no per-image sklearn loop). Label values may be any integers; they are compacted
over the batch first.

Mask provenance matters (paper §6, Table 3): predicted label maps come either from decoder alpha
masks (additive decoders) or from grouping attention masks upsampled to image size. Build them
with `masks_to_labels` and label your results with the `MaskSource` they came from.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "ARIMetric",
    "MBOMetric",
    "MaskSource",
    "ari",
    "best_overlap",
    "contingency",
    "fg_ari",
    "masks_to_labels",
    "mbo",
]

MaskSource = Literal["decoder", "attention"]


def _check_labels(pred: Tensor, target: Tensor) -> None:
    for name, x in (("pred", pred), ("target", target)):
        if not isinstance(x, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor label map (b, h, w); got {type(x).__name__}"
            )
        if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
            raise TypeError(
                f"{name} must hold integer labels (b, h, w); got dtype {x.dtype}. "
                "Turn soft masks (b, k, h, w) into labels with masks_to_labels(masks)."
            )
        if x.ndim != 3:
            raise ValueError(f"{name} must have shape (b, h, w); got {tuple(x.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape (b, h, w); got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}. Resize masks to the target resolution before masks_to_labels."
        )


def masks_to_labels(masks: Tensor, size: tuple[int, int] | None = None) -> Tensor:
    """(b, h, w) int64 label map = argmax over slots of soft masks.

    Args:
        masks: (b, k, h, w) or (b, k, 1, h, w) soft masks (decoder alpha masks, or attention
            `AutoencoderOutput.attn_masks`), or (b, k, n) with n = h·w when ``size`` is given and
            the masks are on a square token grid.
        size: optional (H, W) output size; masks are bilinearly resized before the argmax.
    """
    if masks.ndim == 5:
        if masks.shape[2] != 1:
            raise ValueError(f"5-d masks must be (b, k, 1, h, w); got {tuple(masks.shape)}")
        masks = masks[:, :, 0]
    elif masks.ndim == 3:
        b, k, n = masks.shape
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(
                f"(b, k, n) masks need a square token grid; got n={n}. Reshape to (b, k, h, w)."
            )
        masks = masks.reshape(b, k, side, side)  # (b, k, h, w)
    if masks.ndim != 4:
        raise ValueError(
            f"masks must be (b, k, h, w), (b, k, 1, h, w) or (b, k, n); got {tuple(masks.shape)}"
        )
    if size is not None and tuple(masks.shape[-2:]) != tuple(size):
        masks = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)
    return masks.argmax(1)


_DIRECT_BINS = 1 << 24


def _compact_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, int, Tensor, int, Tensor]:
    """Map both label maps to 0..L-1 and return (pred, L_pred, target, L_target, target values).

    Small non-negative labels index the table directly (absent values only add empty rows or
    columns, which change no metric); otherwise each map is compacted to its sorted unique
    values, so the table stays small for arbitrary label values.
    """
    b = pred.shape[0]
    p_lo, p_hi = (int(v) for v in pred.aminmax())
    t_lo, t_hi = (int(v) for v in target.aminmax())
    if min(p_lo, t_lo) >= 0 and b * (p_hi + 1) * (t_hi + 1) <= _DIRECT_BINS:
        values = torch.arange(t_hi + 1, device=target.device)
        return pred, p_hi + 1, target, t_hi + 1, values
    p_values, p = torch.unique(pred, return_inverse=True)
    t_values, t = torch.unique(target, return_inverse=True)
    return p.reshape(pred.shape), len(p_values), t.reshape(target.shape), len(t_values), t_values


def contingency(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """(b, L_target, L_pred) int64 per-image contingency tables.

    Rows and columns follow the batch's label values: small non-negative labels index the table
    directly, other label sets are compacted to their sorted unique values.

    Args:
        pred, target: (b, h, w) integer label maps.
        valid: optional (b, h, w) bool, pixels to count (others ignored).
    """
    _check_labels(pred, target)
    return _table(pred, target, valid)[0]


def _table(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(contingency (b, L_target, L_pred), target label value of each row)."""
    b = pred.shape[0]
    p, lp, t, lt, t_values = _compact_pair(pred, target)
    size = b * lt * lp
    # int32 indices when they fit: half the memory traffic of int64 on this bandwidth-bound path
    dtype = torch.int32 if size < 2**31 - 1 else torch.int64
    base = torch.arange(b, device=pred.device, dtype=dtype).view(b, 1, 1) * (lt * lp)
    idx = base + t.to(dtype) * lp + p.to(dtype)  # (b, h, w) flat bin per pixel
    if valid is not None:
        # ignored pixels go to one extra bin, dropped below
        idx = torch.where(valid, idx, torch.tensor(size, dtype=dtype))
    counts = torch.bincount(idx.reshape(-1), minlength=size + 1)[:size]
    return counts.reshape(b, lt, lp), t_values


def ari(pred: Tensor, target: Tensor, foreground_only: bool = False) -> Tensor:
    """(b,) float64 adjusted Rand index per image, equal to sklearn `adjusted_rand_score`.

    Args:
        pred: (b, h, w) integer predicted labels (e.g. `masks_to_labels(masks)`).
        target: (b, h, w) integer ground-truth labels; 0 is background.
        foreground_only: score only pixels with ``target > 0`` (FG-ARI, the paper's ARI).

    Degenerate cases follow sklearn: if no pair of pixels is split differently by the two
    labelings (e.g. one cluster each, or a single scored pixel) the ARI is 1.0. An image with
    no scored pixel at all (no foreground under ``foreground_only``) is NaN, see `fg_ari`.
    """
    _check_labels(pred, target)
    n_ij, t_values = _table(pred, target)  # (b, Lt, Lp)
    if foreground_only:
        # Background pixels all sit in the rows of target labels ≤ 0; dropping those rows is the
        # same as dropping the pixels, without an extra masking pass over the image.
        n_ij = n_ij[:, t_values > 0]
    n = n_ij.sum((1, 2))
    sum_sq = n_ij.square().sum((1, 2))
    rows_sq = n_ij.sum(2).square().sum(1)  # Σ_i a_i²
    cols_sq = n_ij.sum(1).square().sum(1)  # Σ_j b_j²
    # sklearn's pair confusion matrix (ordered pairs), integer-exact.
    tp = sum_sq - n
    fp = cols_sq - sum_sq
    fn = rows_sq - sum_sq
    tn = n * n - fp - fn - sum_sq
    tp, fp, fn, tn = (x.double() for x in (tp, fp, fn, tn))
    num = 2.0 * (tp * tn - fn * fp)
    den = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    perfect = (fn == 0) & (fp == 0)
    scores = torch.where(perfect, torch.ones_like(num), num / torch.where(perfect, 1.0, den))
    return torch.where(n > 0, scores, torch.full_like(scores, float("nan")))


def fg_ari(pred: Tensor, target: Tensor) -> Tensor:
    """(b,) float64 FG-ARI (the paper's ARI): adjusted Rand index over the pixels whose
    ground-truth label is not background (``target > 0``).

    Args:
        pred: (b, h, w) integer predicted segment ids (e.g. `masks_to_labels(masks)`).
        target: (b, h, w) integer ground-truth labels, 0 = background.

    Equals sklearn ``adjusted_rand_score(target[fg], pred[fg])`` for every image with foreground
    pixels. **An image without foreground pixels is NaN** (there is nothing to score; sklearn
    would say 1.0 for the empty arrays): average with ``nanmean``, or use
    ``ARIMetric(foreground_only=True)``, so such images are skipped rather than counted as 1.0.
    """
    return ari(pred, target, foreground_only=True)


def best_overlap(
    pred: Tensor, target: Tensor, ignore_background: bool = True, ignore_index: int | None = None
) -> tuple[Tensor, Tensor]:
    """Best IoU of each ground-truth segment with any predicted segment.

    Args:
        pred, target: (b, h, w) integer label maps.
        ignore_background: drop target label 0 from the ground-truth segments (its pixels still
            count in the predicted masks' areas, as in DINOSAUR/OCLF).
        ignore_index: target label whose pixels are removed from both maps (e.g. 255 for VOC's
            void boundaries).

    Returns:
        (best (b, L), present (b, L) bool): best IoU per compacted target label and whether
        that label occurs in the image (and is scored).
    """
    _check_labels(pred, target)
    valid = None if ignore_index is None else target != ignore_index
    counts, values = _table(pred, target, valid)
    n_ij = counts.double()  # (b, Lt, Lp)
    area_t = n_ij.sum(2, keepdim=True)
    area_p = n_ij.sum(1, keepdim=True)
    iou = n_ij / (area_t + area_p - n_ij).clamp_min(1.0)
    best = iou.max(2).values  # (b, Lt)
    present = area_t.squeeze(2) > 0
    drop = torch.zeros_like(values, dtype=torch.bool)
    if ignore_background:
        drop |= values == 0
    if ignore_index is not None:
        drop |= values == ignore_index
    present = present & ~drop.unsqueeze(0)
    return best, present


def mbo(
    pred: Tensor, target: Tensor, ignore_background: bool = True, ignore_index: int | None = None
) -> Tensor:
    """(b,) mean best overlap per image (DINOSAUR/OCLF): each ground-truth segment takes the
    predicted segment of largest IoU; the IoUs are averaged over the image's ground-truth segments.

    Pass instance label maps for mBO_i and semantic (class) label maps for mBO_c. Images with no
    scored ground-truth segment give NaN (`MBOMetric` skips them). See `best_overlap` for the
    background and ``ignore_index`` conventions.
    """
    best, present = best_overlap(pred, target, ignore_background, ignore_index)
    count = present.sum(1)
    total = (best * present).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


class ARIMetric(Metric):
    """Running mean of (FG-)ARI over images. ``update(pred (b,h,w), target (b,h,w))``.

    With ``foreground_only`` images without foreground pixels (NaN in `fg_ari`) are skipped.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, foreground_only: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.foreground_only = foreground_only
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        scores = ari(pred, target, self.foreground_only)
        scores = scores[~scores.isnan()]
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))


class MBOMetric(Metric):
    """Running mean of per-image mBO over images with at least one scored segment."""

    higher_is_better = True
    full_state_update = False

    def __init__(
        self, ignore_background: bool = True, ignore_index: int | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.ignore_background = ignore_background
        self.ignore_index = ignore_index
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        scores = mbo(pred, target, self.ignore_background, self.ignore_index)
        scores = scores[~scores.isnan()]
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))
