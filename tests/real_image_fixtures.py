"""Fixtures in the published layouts of the real-image data and weights (written by the tests).

`write_voc` (VOCdevkit/VOC2012 with instance/class palette PNGs, void borders, an empty image and
a trainaug list), `write_coco` (instances JSON with RLE, compressed RLE, a polygon and a crowd
region, an image without annotations) and `write_vit` (a tiny randomly initialised ViT in the
published DINO / DINOv2 key layout).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

H, W = 20, 28  # the fixtures' image size; crops of 20 take columns 4:24


def save_palette(path: Path, labels: np.ndarray) -> None:
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def save_jpeg(path: Path, seed: int) -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)
    return np.array(Image.open(path).convert("RGB"))  # what a decoder gives back


def write_voc(root: Path) -> dict[str, np.ndarray]:
    """VOC2012 with three val images (two objects + void; one empty) and a trainaug list."""
    decoded = {}
    inst = np.zeros((H, W), np.uint8)
    cls = np.zeros((H, W), np.uint8)
    inst[2:8, 5:12], cls[2:8, 5:12] = 3, 15  # a person, instance id 3 in the file
    inst[10:18, 14:22], cls[10:18, 14:22] = 1, 8  # a cat, instance id 1
    inst[2:8, 0:3], cls[2:8, 0:3] = 2, 12  # a dog outside the centre crop
    inst[9, 5:22] = cls[9, 5:22] = 255  # void border
    for key, (i, c) in {"2007_000001": (inst, cls), "2007_000002": (inst * 0, cls * 0)}.items():
        decoded[key] = save_jpeg(root / "JPEGImages" / f"{key}.jpg", len(decoded))
        save_palette(root / "SegmentationObject" / f"{key}.png", i)
        save_palette(root / "SegmentationClass" / f"{key}.png", c)
    decoded["2008_000003"] = save_jpeg(root / "JPEGImages" / "2008_000003.jpg", 9)  # no masks
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "val.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "trainaug.txt").write_text("2008_000003\n2007_000002\n")
    return decoded


def rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, zeros first."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def write_coco(root: Path, splits: tuple[str, ...] = ("val2017",)) -> None:
    from pycocotools import mask as mask_utils

    a, b, crowd = box(2, 10, 5, 14), box(6, 16, 10, 20), box(14, 20, 4, 9)
    compressed = mask_utils.encode(np.asfortranarray(b.astype(np.uint8)))
    compressed["counts"] = compressed["counts"].decode("ascii")
    anns = [
        {"id": 1, "image_id": 10, "category_id": 90, "iscrowd": 0, "segmentation": rle_uncompressed(a)},
        {"id": 2, "image_id": 10, "category_id": 3, "iscrowd": 0, "segmentation": compressed},
        {"id": 3, "image_id": 10, "category_id": 1, "iscrowd": 1, "segmentation": rle_uncompressed(crowd)},
        {"id": 4, "image_id": 11, "category_id": 1, "iscrowd": 0,
         "segmentation": [[16.0, 4.0, 23.0, 4.0, 23.0, 12.0, 16.0, 12.0]]},  # a polygon
    ]  # fmt: skip
    images = [
        {"id": 10, "file_name": "000010.jpg", "height": H, "width": W},
        {"id": 11, "file_name": "000011.jpg", "height": H, "width": W},
        {"id": 12, "file_name": "000012.jpg", "height": H, "width": W},  # no annotations
    ]
    cats = [{"id": i, "name": n} for i, n in ((1, "person"), (3, "car"), (90, "toothbrush"))]
    (root / "annotations").mkdir(parents=True)
    data = {"images": images, "annotations": anns, "categories": cats}
    for split in splits:
        for i, im in enumerate(images):
            save_jpeg(root / split / im["file_name"], 20 + i)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


#: a tiny ViT: patch 4, 12-d tokens, 2 blocks of 2 heads, a 4 × 4 position grid
TINY_VIT = {"patch_size": 4, "embed_dim": 12, "depth": 2, "num_heads": 2, "pos_grid": 4}


def write_vit(path: Path, v2: bool = False, seed: int = 0) -> Path:
    """A random checkpoint of the tiny ViT in the published DINO (or DINOv2) key layout."""
    from probslot.encoders.vit import ViTArch, published_shapes

    arch = ViTArch("vit", "tiny", **TINY_VIT, layerscale=v2, mask_token=v2)
    g = torch.Generator().manual_seed(seed)
    state = {
        k: 0.2 * torch.randn(shape, generator=g) for k, shape in published_shapes(arch).items()
    }
    torch.save(state, path)
    return path


def vit_overrides(path: Path, v2: bool = False) -> list[str]:
    """Config overrides that swap a config's ViT for the tiny one saved at `path`."""
    kw = {**TINY_VIT, "weights": str(path), "layer": 2, "layerscale": v2, "mask_token": v2}
    return ["model.encoder=vit"] + [
        f"model.encoder_kwargs.{k}={str(v).lower() if isinstance(v, bool) else v}"
        for k, v in kw.items()
    ]
