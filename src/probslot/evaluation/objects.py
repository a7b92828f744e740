"""Evaluation of feature-reconstruction models on real images: mBO_i, mBO_c, FG-ARI, CorLoc.

`evaluate_objects` runs a `probslot.models.FeatureAutoencoder` over a dataset of the VOC / COCO
item contract (``mask`` instances, ``class_mask``, ``ignore``; `probslot.data.voc`) and reports
every metric for both mask sources, as the paper's Table 3 does (the ‡ rows are the attention
masks): the decoder's alpha masks (MLP) or last cross-attention (transformer), and the grouping's
attention. Masks are upsampled to the image and compared at its resolution. `probslot evaluate`
calls it for runs of such models and writes its result to ``eval.json`` (`EvalResult.objects`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probslot.data.contract import collate
from probslot.evaluation.results import ObjectDiscovery, ObjectScores
from probslot.metrics.objects import object_metrics

__all__ = ["evaluate_objects"]

METRICS = ("mbo_i", "mbo_c", "fg_ari", "corloc")


def _mean(values: list[Tensor]) -> float | None:
    if not values:
        return None
    v = torch.cat(values).double()
    v = v[~v.isnan()]
    return float(v.mean()) if v.numel() else None


@torch.no_grad()
def evaluate_objects(
    model: Any,
    dataset: Any,
    max_images: int | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
) -> ObjectDiscovery:
    """Object-discovery figures of `model` on the first `max_images` items of `dataset`.

    Returns:
        `ObjectDiscovery`: per mask source (``decoder``, ``attention``) mBO_i, mBO_c, FG-ARI
        and CorLoc, the feature MSE and the images each metric scored; a figure is the mean
        over the images where it is defined (images without objects are skipped), None when
        no image defines it (mBO_c also without class maps).
    """
    m = len(dataset) if max_images is None else min(max_images, len(dataset))
    model.eval()
    device = next(model.parameters()).device
    per_image: dict[str, list[Tensor]] = {}
    mse: list[Tensor] = []
    for start in range(0, m, batch_size):
        batch = collate([dataset[i] for i in range(start, min(m, start + batch_size))])
        images = batch["image"].to(device)
        inputs = {"features": batch["features"].to(device)} if "features" in batch else {}
        out = model(images, **inputs)
        masks = {"attention": out.attn_masks}
        if out.masks is not None:
            masks = {"decoder": out.masks[:, :, 0], **masks}
        figures = object_metrics(
            {k: v.float().cpu() for k, v in masks.items()},
            batch["mask"],
            batch.get("class_mask"),
            batch.get("ignore"),
        )
        for key, values in figures.items():
            per_image.setdefault(key, []).append(values)
        mse.append((out.recon.float() - out.target.float()).pow(2).mean((1, 2)).cpu())
        if progress is not None:
            progress(images.shape[0])
    segmentation: dict[str, dict[str, float | None]] = {}
    scored: dict[str, int] = {}
    for key, values in per_image.items():
        source, metric = key.split("/")
        segmentation.setdefault(source, {})[metric] = _mean(values)
        scored[metric] = int((~torch.cat(values).isnan()).sum())
    return ObjectDiscovery(
        segmentation={
            source: ObjectScores(
                mbo_i=v.get("mbo_i"),
                mbo_c=v.get("mbo_c"),
                fg_ari=v.get("fg_ari"),
                corloc=v.get("corloc"),
            )
            for source, v in segmentation.items()
        },
        feature_mse=_mean(mse),
        scored_images=scored,
    )
