"""Reconstruction error: MSE over all pixels and over foreground pixels only."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["MSEMetric", "fg_mse", "mse"]


def mse(recon: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """(b,) mean squared error per image, averaged over channels and (masked) pixels.

    Args:
        recon, target: (b, c, h, w) images on the same scale (e.g. [0, 1]).
        mask: optional (b, h, w) pixels to score (bool, or an integer label map where > 0 is
            foreground). Images with no scored pixel give NaN.
    """
    if recon.shape != target.shape or recon.ndim != 4:
        raise ValueError(
            f"recon and target must both be (b, c, h, w) and match; got {tuple(recon.shape)} "
            f"and {tuple(target.shape)}"
        )
    err = (recon.double() - target.double()).square().mean(1)  # (b, h, w)
    if mask is None:
        return err.flatten(1).mean(1)
    if mask.shape != err.shape:
        raise ValueError(
            f"mask must have shape (b, h, w) = {tuple(err.shape)}; got {tuple(mask.shape)}"
        )
    keep = (mask > 0) if mask.dtype != torch.bool else mask
    keep = keep.double()
    count = keep.flatten(1).sum(1)
    total = (err * keep).flatten(1).sum(1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def fg_mse(recon: Tensor, target: Tensor, labels: Tensor) -> Tensor:
    """(b,) MSE over foreground pixels (``labels > 0``, 0 = background) of (b, c, h, w) images."""
    return mse(recon, target, labels > 0)


class MSEMetric(Metric):
    """Running per-image-mean MSE; with ``foreground_only`` pass ``labels`` (b, h, w) to update and
    images without foreground are skipped."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, foreground_only: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.foreground_only = foreground_only
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, recon: Tensor, target: Tensor, labels: Tensor | None = None) -> None:
        if self.foreground_only:
            if labels is None:
                raise ValueError("MSEMetric(foreground_only=True).update needs labels (b, h, w)")
            scores = fg_mse(recon, target, labels)
            scores = scores[~scores.isnan()]
        else:
            scores = mse(recon, target)
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"))
