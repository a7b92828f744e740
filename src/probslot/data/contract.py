"""The dataset contract shared by every dataset in `probslot.data` (see `docs/data.md`).

An image dataset item is a dict with exactly these keys (max_objects = M, F latent factors):

=============  ==================  ==========================================================
key            dtype, shape        meaning
=============  ==================  ==========================================================
image          float32 (3, H, W)   RGB in [0, 1]
mask           int64 (H, W)        label map: 0 = background, k = object in latent row k - 1
num_objects    int                 foreground objects placed in the scene (rows in use)
latents        float32 (M, F)      ground-truth factors, rows >= num_objects are zero;
                                   column names in the dataset's `latent_names`
visibility     bool (M,)           object owns at least one pixel of `mask`
=============  ==================  ==========================================================

`collate` stacks a list of items into a batch with a leading (b,) axis on every key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import get_worker_info

from probslot.registry import Registry

__all__ = [
    "DATASETS",
    "IMAGE_KEYS",
    "check_image_item",
    "collate",
]

#: name → dataset class; every factory takes ``num_samples`` and ``seed`` (plus its own options).
DATASETS: Registry[torch.utils.data.Dataset] = Registry("dataset")

#: The keys of an image item, in the order documented above.
IMAGE_KEYS: tuple[str, ...] = ("image", "mask", "num_objects", "latents", "visibility")


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
    """Stack a list of items into a batch dict.

    Tensors are stacked on a new leading axis (b, ...); Python ints, floats and bools become
    (b,) tensors (int64, float32, bool). Every item must have the same keys.

    Args:
        batch: b items, e.g. from `SpritesDataset.__getitem__` or `Toy2DDataset.__getitem__`.

    Returns:
        For image items: ``image`` (b, 3, H, W) float32, ``mask`` (b, H, W) int64,
        ``num_objects`` (b,) int64, ``latents`` (b, M, F) float32, ``visibility`` (b, M) bool.
    """
    if len(batch) == 0:
        raise ValueError("collate needs at least one item; got an empty batch")
    keys = list(batch[0].keys())
    for i, item in enumerate(batch):
        if list(item.keys()) != keys:
            raise ValueError(
                f"every item in a batch must have the same keys; item 0 has {keys}, "
                f"item {i} has {list(item.keys())}"
            )
    out: dict[str, Tensor] = {}
    for key in keys:
        values = [item[key] for item in batch]
        first = values[0]
        if isinstance(first, Tensor):
            shared = None
            if get_worker_info() is not None:  # in a DataLoader worker: stack into shared memory
                # once, as torch's default_collate does, instead of copying there when sent
                numel = sum(v.numel() for v in values)
                storage = first._typed_storage()._new_shared(numel, device=first.device)
                shared = first.new(storage).resize_(len(values), *first.shape)
            out[key] = torch.stack(values, out=shared)
        elif isinstance(first, bool):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, float):
            out[key] = torch.tensor(values, dtype=torch.float32)
        else:
            raise TypeError(
                f"collate stacks tensors, ints, floats and bools; key {key!r} holds "
                f"{type(first).__name__}"
            )
    return out


def check_image_item(item: Mapping[str, Any], max_objects: int, num_latents: int) -> None:
    """Raise ValueError if `item` breaks the image-item contract (for dataset authors and tests)."""
    missing = [k for k in IMAGE_KEYS if k not in item]
    if missing:
        raise ValueError(f"image items need keys {list(IMAGE_KEYS)}; missing {missing}")
    image, mask = item["image"], item["mask"]
    if image.dtype != torch.float32 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be float32 (3, H, W); got {image.dtype} {tuple(image.shape)}")
    if float(image.min()) < 0.0 or float(image.max()) > 1.0:
        raise ValueError(f"image must lie in [0, 1]; got [{image.min():.4f}, {image.max():.4f}]")
    if mask.dtype != torch.int64 or tuple(mask.shape) != tuple(image.shape[1:]):
        raise ValueError(
            f"mask must be int64 (H, W) = {tuple(image.shape[1:])}; got {mask.dtype} {tuple(mask.shape)}"
        )
    n = item["num_objects"]
    if not isinstance(n, int) or not 0 <= n <= max_objects:
        raise ValueError(f"num_objects must be an int in [0, {max_objects}]; got {n!r}")
    latents, vis = item["latents"], item["visibility"]
    if latents.dtype != torch.float32 or tuple(latents.shape) != (max_objects, num_latents):
        raise ValueError(
            f"latents must be float32 ({max_objects}, {num_latents}); "
            f"got {latents.dtype} {tuple(latents.shape)}"
        )
    if vis.dtype != torch.bool or tuple(vis.shape) != (max_objects,):
        raise ValueError(
            f"visibility must be bool ({max_objects},); got {vis.dtype} {tuple(vis.shape)}"
        )
    if int(mask.min()) < 0 or int(mask.max()) > n:
        raise ValueError(f"mask labels must lie in [0, num_objects={n}]; got max {int(mask.max())}")


def register_dataset(name: str) -> Callable[[type], type]:
    """Class decorator: register a dataset class under `name` in `DATASETS`."""
    return DATASETS.register(name)  # type: ignore[return-value]
