"""Pascal VOC 2012 for object discovery (DINOSAUR's setup, the paper's Table 3).

Reads the published layout (``VOCtrainval_11-May-2012.tar`` unpacked)::

    ROOT/JPEGImages/{id}.jpg
    ROOT/SegmentationObject/{id}.png    palette PNG: 0 background, 1…N instances, 255 void
    ROOT/SegmentationClass/{id}.png     palette PNG: 0 background, 1…20 classes, 255 void
    ROOT/ImageSets/Segmentation/{list}.txt   one image id per line

``split="train"`` reads the list ``train_list`` (default ``trainaug``: the 10,582 images of
SBD + VOC train without VOC val that DINOSAUR trains on; VOC itself ships ``train``, 1,464
images), ``"val"`` and ``"test"`` read ``val_list`` (default ``val``, 1,449 images, evaluated).
Images without ``SegmentationObject`` masks (most of trainaug) get an empty mask.

Each image is resized so its shorter side is ``image_size`` (bicubic, anti-aliased; masks
nearest) and centre-cropped to ``image_size`` × ``image_size`` (DINOSAUR's evaluation
transform); ``augment=True`` takes a random crop and a random horizontal flip instead (training;
such a split cannot be feature-cached).

Items: the dataset contract (``docs/data.md``: image, mask (instances, 1…num_objects, renumbered
after the crop), num_objects, latents (the class id, one column), visibility) plus ``class_mask``
int64 (H, W) (0 background, 1…20), ``labels`` int64 (max_instances,) (the class of each instance
row, 0 unused) and ``ignore`` bool (H, W) (void pixels and instances beyond ``max_instances``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from probslot.data.contract import register_dataset
from probslot.validation import check_bool, check_choice, check_int

__all__ = [
    "VOC_CLASSES",
    "VOCDataset",
    "center_crop_box",
    "object_item",
    "resize_and_crop",
    "resize_shorter",
]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
VOID = 255


def resize_shorter(image: Tensor, masks: list[Tensor], size: int) -> tuple[Tensor, list[Tensor]]:
    """Resize so the shorter side is `size`: image (3, h, w) float bicubic anti-aliased (clamped
    to [0, 1]), integer masks (h, w) nearest."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    out_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    if (h, w) == out_hw:
        return image, masks
    img = F.interpolate(image[None], size=out_hw, mode="bicubic", antialias=True)[0].clamp(0, 1)
    resized = [
        F.interpolate(m[None, None].float(), size=out_hw, mode="nearest-exact")[0, 0].long()
        for m in masks
    ]
    return img, resized


def center_crop_box(h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left corner of the centred `size` × `size` crop of an h × w image."""
    return (h - size) // 2, (w - size) // 2


def resize_and_crop(
    image: Tensor, maps: list[Tensor], size: int, augment: bool, seed: int, index: int
) -> tuple[Tensor, list[Tensor]]:
    """`resize_shorter`, then the centre `size` crop, or with `augment` a random crop and a
    random horizontal flip drawn from (`seed`, `index`) (the same item gets the same view)."""
    image, maps = resize_shorter(image, maps, size)
    h, w = image.shape[-2:]
    if augment:
        g = torch.Generator().manual_seed(seed * 1_000_003 + index)
        top = int(torch.randint(0, h - size + 1, (1,), generator=g))
        left = int(torch.randint(0, w - size + 1, (1,), generator=g))
        flip = bool(torch.rand((), generator=g) < 0.5)
    else:
        (top, left), flip = center_crop_box(h, w, size), False
    image = image[:, top : top + size, left : left + size]
    maps = [m[top : top + size, left : left + size] for m in maps]
    if flip:
        image, maps = image.flip(-1), [m.flip(-1) for m in maps]
    return image, maps


def object_item(
    image: Tensor,
    instances: Tensor,
    classes: Tensor,
    ignore: Tensor,
    instance_class: dict[int, int],
    max_objects: int,
) -> dict[str, Any]:
    """The item of a cropped image: instances renumbered 1…n in order of their original ids
    (absent ones dropped, those beyond `max_objects` ignored), their classes as labels/latents."""
    ids = [int(i) for i in torch.unique(instances[~ignore]).tolist() if i > 0]
    over = ids[max_objects:]
    ids = ids[:max_objects]
    if over:
        ignore = ignore | torch.isin(instances, torch.tensor(over))
    lookup = torch.zeros(int(instances.max()) + 1 if instances.numel() else 1, dtype=torch.long)
    for new, old in enumerate(ids, start=1):
        lookup[old] = new
    mask = torch.where(ignore, 0, lookup[instances.clamp_min(0)])
    labels = torch.zeros(max_objects, dtype=torch.long)
    for row, old in enumerate(ids):
        labels[row] = instance_class.get(old, 0)
    visibility = torch.zeros(max_objects, dtype=torch.bool)
    visibility[: len(ids)] = True
    return {
        "image": image.float().contiguous(),
        "mask": mask.long(),
        "num_objects": len(ids),
        "latents": labels.float()[:, None],
        "visibility": visibility,
        "class_mask": torch.where(ignore, 0, classes).long(),
        "labels": labels,
        "ignore": ignore,
    }


def _read_rgb(path: Path) -> Tensor:
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _read_palette(path: Path) -> Tensor:
    """The palette indices of a VOC PNG (not its colours)."""
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("P", "L"):
            raise ValueError(
                f"{path}: VOC masks are palette (P) or grey (L) PNGs; got mode {img.mode}"
            )
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).astype(np.int64))


def _list_hint(folder: Path) -> str:
    names = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
    return f" (it has {', '.join(names)})" if names else ""


class ObjectImageDataset(Dataset):
    """What the real-image object datasets (VOC, COCO) share: their root folder, split, crop
    and augmentation settings, each checked. Subclasses read their own files."""

    latent_names = ("class",)
    takes_split = True  # build_split passes train / val / test (see probslot.data.config)

    def __init__(
        self,
        root: str | None,
        split: str,
        image_size: int,
        augment: bool,
        max_instances: int,
        seed: int,
        missing_root: str,
    ) -> None:
        if root is None:
            raise ValueError(missing_root)
        self.root = Path(root).expanduser()
        self.split = check_choice("split", split, ("train", "val", "test"))
        self.image_size = check_int("image_size", image_size, low=1)
        self.augment = check_bool("augment", augment)
        self.deterministic = not self.augment
        self.max_instances = check_int("max_instances", max_instances, low=1)
        self.seed = int(seed)


@register_dataset("voc")
class VOCDataset(ObjectImageDataset):
    """Pascal VOC 2012 images with instance and class masks (see the module docstring).

    Args:
        num_samples: at most this many images of the list, in its order (-1: all).
        seed: seed of the random crops and flips (``augment``).
        root: the ``VOC2012`` folder (``VOCdevkit/VOC2012``).
        split: ``train`` (``train_list``), ``val`` or ``test`` (``val_list``).
        image_size: side of the square crop.
        train_list / val_list: image lists in ``ImageSets/Segmentation``.
        augment: random crop and horizontal flip instead of the centre crop.
        max_instances: instance rows per item (instances beyond are ignored pixels).
    """

    classes = VOC_CLASSES

    def __init__(
        self,
        num_samples: int = -1,
        seed: int = 0,
        root: str | None = None,
        split: str = "train",
        image_size: int = 224,
        train_list: str = "trainaug",
        val_list: str = "val",
        augment: bool = False,
        max_instances: int = 64,
    ) -> None:
        super().__init__(
            root, split, image_size, augment, max_instances, seed,
            missing_root="the voc dataset needs root: the VOC2012 folder of "
            "VOCtrainval_11-May-2012.tar (data.root=VOCdevkit/VOC2012)",
        )  # fmt: skip
        if not (self.root / "JPEGImages").is_dir():
            raise FileNotFoundError(
                f"{str(self.root)!r} is not a VOC2012 folder (no JPEGImages/); pass the "
                "VOCdevkit/VOC2012 folder of VOCtrainval_11-May-2012.tar"
            )
        name = train_list if split == "train" else val_list
        lists = self.root / "ImageSets" / "Segmentation"
        path = lists / f"{name}.txt"
        if not path.is_file():
            extra = (
                " (trainaug: the SBD train_aug.txt list, see docs/real-images.md)"
                if name == "trainaug"
                else ""
            )
            raise FileNotFoundError(
                f"VOC image list {str(path)!r} does not exist{extra}; set "
                f"data.dataset_kwargs.{'train' if split == 'train' else 'val'}_list to one "
                f"of the lists in {lists}{_list_hint(lists)}"
            )
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        n = check_int("num_samples", num_samples, low=-1)
        self.ids = ids if n == -1 else ids[:n]
        if n > len(ids):
            raise ValueError(
                f"{path} lists {len(ids)} images but num_samples={n}; lower it or use -1 (all)"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        key = self.ids[index]
        image = _read_rgb(self.root / "JPEGImages" / f"{key}.jpg")
        h, w = image.shape[-2:]
        obj_path = self.root / "SegmentationObject" / f"{key}.png"
        cls_path = self.root / "SegmentationClass" / f"{key}.png"
        if obj_path.is_file() and cls_path.is_file():
            instances, classes = _read_palette(obj_path), _read_palette(cls_path)
            if instances.shape != (h, w) or classes.shape != (h, w):
                raise ValueError(
                    f"{obj_path}: masks of shape {tuple(instances.shape)} / {tuple(classes.shape)} "
                    f"for an image of {(h, w)}"
                )
        else:  # most trainaug images have no masks: nothing to score, nothing ignored
            instances = classes = torch.zeros(h, w, dtype=torch.long)
        instance_class = {}
        for i in torch.unique(instances).tolist():
            if 0 < i < VOID:  # the class under an instance (VOC aligns them exactly)
                values = classes[(instances == i) & (classes != VOID)]
                instance_class[i] = int(values.mode().values) if values.numel() else 0
        image, (instances, classes) = resize_and_crop(
            image, [instances, classes], self.image_size, self.augment, self.seed, index
        )
        ignore = (instances == VOID) | (classes == VOID)
        instances = torch.where(ignore, 0, instances)
        return object_item(image, instances, classes, ignore, instance_class, self.max_instances)
