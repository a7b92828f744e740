"""`preview`: a labelled PNG grid of a dataset's items (image | mask pairs, or point clouds)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from probslot.atomic import atomic_path
from probslot.data.contract import DATASETS
from probslot.validation import check_int

__all__ = ["preview"]

# label 0 (background) is near-black; objects get tab10 colours
_MASK_COLOURS = [(0.08, 0.08, 0.08)] + [
    (0.12, 0.47, 0.71),
    (1.0, 0.5, 0.05),
    (0.17, 0.63, 0.17),
    (0.84, 0.15, 0.16),
    (0.58, 0.4, 0.74),
    (0.55, 0.34, 0.29),
    (0.89, 0.47, 0.76),
    (0.5, 0.5, 0.5),
    (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81),
]


def preview(
    name: str,
    out: str | os.PathLike[str] = "grid.png",
    num: int = 16,
    seed: int = 0,
    **dataset_kwargs: Any,
) -> Path:
    """Write a labelled PNG grid of the first `num` items of dataset `name` and return its path.

    Image datasets show each item as an image | mask pair (mask labels coloured, background
    dark) titled with its index, object count and visible count; ``toy2d`` shows each item's
    points coloured by mode. The PNG is written atomically.

    Args:
        name: a registered dataset (`probslot.data.DATASETS`), e.g. ``sprites`` or ``toy2d``.
        out: where to write the PNG (parent folders are created).
        num: how many items to show, in [1, 256].
        seed: dataset seed.
        **dataset_kwargs: further dataset options, e.g. ``image_size=32``, ``max_objects=6``.

    Returns:
        The path of the written PNG.
    """
    factory = DATASETS.get(name)
    num = check_int("num", num, low=1, high=256)
    out_path = Path(out)
    if out_path.suffix.lower() != ".png":
        raise ValueError(f"out must be a .png path; got {str(out_path)!r}")
    dataset = factory(num_samples=num, seed=seed, **dataset_kwargs)

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    items = [dataset[i] for i in range(num)]
    is_image = "image" in items[0]
    per_row = 4 if is_image else 6
    panels = 2 if is_image else 1
    rows = math.ceil(num / per_row)
    cols = per_row * panels
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.95 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, item in enumerate(items):
        r, c = divmod(i, per_row)
        if is_image:
            image = item["image"].permute(1, 2, 0).numpy()
            mask = item["mask"].numpy()
            k = max(int(mask.max()), int(item["num_objects"]), 1)
            colours = [_MASK_COLOURS[j % len(_MASK_COLOURS)] for j in range(k + 1)]
            ax_img, ax_mask = axes[r, 2 * c], axes[r, 2 * c + 1]
            ax_img.imshow(image, interpolation="nearest")
            visible = int(item["visibility"].sum())
            ax_img.set_title(f"#{i} n={item['num_objects']} vis={visible}", fontsize=7)
            ax_mask.imshow(
                mask, cmap=ListedColormap(colours), vmin=-0.5, vmax=k + 0.5, interpolation="nearest"
            )
            ax_mask.set_title("mask", fontsize=7)
        else:
            ax = axes[r, c]
            pts = item["points"].numpy()
            labels = item["labels"].numpy()
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                s=2,
                c=[_MASK_COLOURS[1 + int(m) % 10] for m in labels],
            )
            modes = ",".join(str(int(m)) for m in np.asarray(item["modes"]))
            ax.set_title(f"#{i} modes {modes}", fontsize=7)
    fig.suptitle(f"{name} (seed {seed})", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out_path
