"""COCO 2017 for object discovery (DINOSAUR's setup), instance annotations via pycocotools.

Reads the published layout (``train2017.zip``, ``val2017.zip``, ``annotations_trainval2017.zip``)::

    ROOT/annotations/instances_{train,val}2017.json
    ROOT/{train,val}2017/{file_name}

``split="train"`` reads train2017 (118,287 images), ``"val"`` and ``"test"`` val2017 (5,000).
Masks are decoded with pycocotools (polygons, RLE, compressed RLE; ``pip install pycocotools``,
the ``coco`` extra). The standard protocol's ignore regions (OCLF/DINOSAUR ``ignore_overlaps``):
pixels of crowd annotations (``iscrowd: 1``) and pixels covered by more than one instance are
``ignore``d; everything else that no instance covers is background. Instances keep the order of
the annotation file and are renumbered 1…n after the crop (absent ones dropped, those beyond
``max_instances`` ignored). Images are resized and cropped as in `probslot.data.voc`.

Items: as `probslot.data.voc.VOCDataset` (``class_mask`` and ``labels`` hold the 80 categories
as 1…80 in the order of their COCO ids; `COCODataset.classes` names them).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import torch

from probslot.data.contract import register_dataset
from probslot.data.voc import ObjectImageDataset, _read_rgb, object_item, resize_and_crop
from probslot.validation import check_bool, check_int

__all__ = ["COCODataset", "decode_segmentation"]


def decode_segmentation(segmentation: Any, h: int, w: int) -> np.ndarray:
    """(h, w) bool mask of a COCO ``segmentation`` (polygon list, RLE or compressed RLE)."""
    try:
        from pycocotools import mask as mask_utils
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading COCO annotations needs pycocotools: pip install pycocotools "
            "(or pip install 'probslot[coco]')"
        ) from None
    if isinstance(segmentation, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, h, w)  # uncompressed RLE
    else:
        rle = segmentation  # compressed RLE
    with warnings.catch_warnings():  # pycocotools 2.0 under NumPy 2: a harmless copy= warning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


@register_dataset("coco")
class COCODataset(ObjectImageDataset):
    """COCO 2017 images with instance and class masks and the protocol's ignore regions.

    Args:
        num_samples: at most this many images, in the annotation file's order (-1: all).
        seed: seed of the random crops and flips (``augment``).
        root: the folder holding ``annotations/`` and ``train2017/`` / ``val2017/``.
        split: ``train`` (train2017), ``val`` or ``test`` (val2017).
        image_size: side of the square crop.
        augment: random crop and horizontal flip instead of the centre crop.
        max_instances: instance rows per item.
        skip_empty: leave out images without a non-crowd instance.
    """

    def __init__(
        self,
        num_samples: int = -1,
        seed: int = 0,
        root: str | None = None,
        split: str = "train",
        image_size: int = 224,
        augment: bool = False,
        max_instances: int = 100,
        skip_empty: bool = False,
    ) -> None:
        super().__init__(
            root, split, image_size, augment, max_instances, seed,
            missing_root="the coco dataset needs root: the folder with annotations/ and "
            "train2017/, val2017/ (data.root=DIR)",
        )  # fmt: skip
        year = "train2017" if split == "train" else "val2017"
        ann_path = self.root / "annotations" / f"instances_{year}.json"
        if not ann_path.is_file():
            raise FileNotFoundError(
                f"COCO annotation file {str(ann_path)!r} does not exist; unpack "
                "annotations_trainval2017.zip into the root folder"
            )
        self.image_dir = self.root / year
        data = json.loads(ann_path.read_text(encoding="utf-8"))
        cats = sorted(c["id"] for c in data.get("categories", []))
        self.category_index = {cid: i + 1 for i, cid in enumerate(cats)}
        names = {c["id"]: c["name"] for c in data.get("categories", [])}
        self.classes = tuple(names[c] for c in cats)
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        images = data.get("images", [])
        if check_bool("skip_empty", skip_empty):
            images = [
                im
                for im in images
                if any(not a.get("iscrowd", 0) for a in by_image.get(im["id"], ()))
            ]
        n = check_int("num_samples", num_samples, low=-1)
        if n > len(images):
            raise ValueError(
                f"{ann_path} has {len(images)} images but num_samples={n}; lower it or use -1"
            )
        self.images = images if n == -1 else images[:n]
        self.annotations = {im["id"]: by_image.get(im["id"], []) for im in self.images}

    def __len__(self) -> int:
        return len(self.images)

    def _maps(self, info: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """Full-size instance ids (annotation order, 1…), classes and ignore (crowd, overlaps)."""
        h, w = int(info["height"]), int(info["width"])
        instances = np.zeros((h, w), dtype=np.int64)
        classes = np.zeros((h, w), dtype=np.int64)
        cover = np.zeros((h, w), dtype=np.int32)
        crowd = np.zeros((h, w), dtype=bool)
        instance_class: dict[int, int] = {}
        next_id = 1
        for ann in self.annotations[info["id"]]:
            m = decode_segmentation(ann["segmentation"], h, w)
            if ann.get("iscrowd", 0):
                crowd |= m
                continue
            instances[m] = next_id
            classes[m] = self.category_index.get(ann["category_id"], 0)
            instance_class[next_id] = self.category_index.get(ann["category_id"], 0)
            cover += m
            next_id += 1
        ignore = crowd | (cover > 1)
        as_tensor = torch.from_numpy
        return as_tensor(instances), as_tensor(classes), as_tensor(ignore), instance_class  # type: ignore[return-value]

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.images[index]
        image = _read_rgb(self.image_dir / info["file_name"])
        if tuple(image.shape[-2:]) != (int(info["height"]), int(info["width"])):
            raise ValueError(
                f"{self.image_dir / info['file_name']}: image of {tuple(image.shape[-2:])} but the "
                f"annotations say {(info['height'], info['width'])}"
            )
        instances, classes, ignore, instance_class = self._maps(info)
        image, (instances, classes, ignore) = resize_and_crop(
            image,
            [instances, classes, ignore.long()],
            self.image_size,
            self.augment,
            self.seed,
            index,
        )
        ignore = ignore.bool()
        instances = torch.where(ignore, 0, instances)
        return object_item(image, instances, classes, ignore, instance_class, self.max_instances)
