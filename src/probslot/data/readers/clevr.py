"""CLEVR v1.0 (PNG images + scene JSON, no masks) and CLEVRTex (PNG images, ``_flat.png`` masks, JSON).

**CLEVR v1.0** (Johnson et al. 2017, CC-BY 4.0): ``CLEVR_v1.0/images/{train,val,test}/
CLEVR_{split}_{i:06d}.png`` (320×480, RGBA: converted to RGB) and ``scenes/CLEVR_{split}_scenes.json``
= ``{info, scenes: [{image_index, image_filename, objects: [{color, size, shape, material,
3d_coords[3], pixel_coords[3], rotation}], ...}]}`` (train, val; the test split has no scenes).
3–10 objects; no masks, so ``mask`` is all background and ``visibility`` marks the rows in use.
Latents ``x, y, z`` (3d_coords), ``pixel_x, pixel_y, pixel_z``, ``rotation`` and the codes of
``size, material, shape, color`` in CLEVR's own vocabulary order (`CLEVR_VOCAB`).

**CLEVRTex** (Karazija et al. 2021): ``clevrtex_{variant}/{0..49}/CLEVRTEX_{variant}_{i:06d}.png``
(240×320, channels [:3] kept), ``..._flat.png`` (one channel, 0 = background, object k = label k)
and ``....json`` ({ground_material, objects: [{material, shape, size, rotation, ...}]}).
Variants full, pbg, vbg, grassbg, camo, outd. Splits by sorted index as the official loader:
test = the first 10 %, val = the next 10 %, train = the rest (``int(fraction · count)``
boundaries); ``all`` = every image (outd has no official split). Latents ``rotation, size, shape,
material``: numbers as they are, strings as their index in the sorted vocabulary of the whole
split (recorded in the store manifest under ``categories``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from probslot.data.readers.base import READERS, DataFormatError, Reader, Record, listing_hint

__all__ = ["CLEVR_VOCAB", "ClevrReader", "ClevrTexReader", "read_png"]

#: CLEVR's vocabularies (``properties.json`` of clevr-dataset-gen), in order: code = index
CLEVR_VOCAB: dict[str, tuple[str, ...]] = {
    "size": ("large", "small"),
    "material": ("rubber", "metal"),
    "shape": ("cube", "sphere", "cylinder"),
    "color": ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"),
}


def read_png(path: Path, origin: str, rgb: bool = True) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB (`rgb`) or its raw single-channel values (H, W)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if rgb:
                return np.asarray(img.convert("RGB"))
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataFormatError(
                    origin, f"mask {path.name} has mode {img.mode}; expected one channel (L or P)"
                )
            return np.asarray(img)
    except DataFormatError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise DataFormatError(origin, f"cannot decode {path.name} ({err})") from None


def _expect_hw(array: np.ndarray, hw: tuple[int, int], origin: str, what: str) -> None:
    if array.shape[:2] != hw:
        raise DataFormatError(
            origin, f"{what} has shape {array.shape[:2]}; expected {hw[0]}×{hw[1]} (H×W)"
        )


@READERS.register("clevr")
class ClevrReader(Reader):
    """CLEVR v1.0: the folder ``CLEVR_v1.0`` (or one that holds it); splits train, val."""

    format = "clevr"
    splits = ("train", "val")
    default_crop = "center"
    has_masks = False
    hw = (320, 480)

    def __post_init__(self) -> None:
        super().__post_init__()
        root = Path(self.source)
        if not (root / "scenes").is_dir() and (root / "CLEVR_v1.0").is_dir():
            root = root / "CLEVR_v1.0"
        self.root = root
        self.scene_file = root / "scenes" / f"CLEVR_{self.split}_scenes.json"
        self.image_dir = root / "images" / self.split
        for path in (self.scene_file, self.image_dir):
            if not path.exists():
                raise FileNotFoundError(
                    f"clevr: {str(path)!r} does not exist (expected CLEVR_v1.0/scenes/"
                    f"CLEVR_{self.split}_scenes.json and images/{self.split}/)"
                    + listing_hint(path.parent)
                )
        try:
            scenes = json.loads(self.scene_file.read_text(encoding="utf-8"))["scenes"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(
                self.scene_file, f"not a CLEVR scene file ({err!r}); expected {{'scenes': [...]}}"
            ) from None
        if not scenes:
            raise DataFormatError(self.scene_file, "holds no scenes")
        self.scenes = sorted(scenes, key=lambda s: s.get("image_index", 0))
        self.image_hw = self.hw
        self.max_objects = 10
        self.latent_names = (
            "x",
            "y",
            "z",
            "pixel_x",
            "pixel_y",
            "pixel_z",
            "rotation",
            *CLEVR_VOCAB,
        )

    def __len__(self) -> int:
        return len(self.scenes)

    def source_files(self, count: int | None = None) -> list[Path]:
        scenes = self.scenes[:count] if count is not None else self.scenes
        return [self.scene_file, *(self.image_dir / s["image_filename"] for s in scenes)]

    def records(self, start: int = 0) -> Iterator[Record]:
        for index in range(start, len(self.scenes)):
            yield self._record(index)

    def _record(self, index: int) -> Record:
        scene = self.scenes[index]
        origin = f"{self.scene_file}: scene {index}"
        try:
            objects = scene["objects"]
            path = self.image_dir / scene["image_filename"]
        except (KeyError, TypeError):
            raise DataFormatError(
                self.scene_file, "a scene needs 'objects' and 'image_filename'", index
            ) from None
        if len(objects) > self.max_objects:
            raise DataFormatError(
                self.scene_file,
                f"{len(objects)} objects; expected at most {self.max_objects}",
                index,
            )
        latents = np.zeros((self.max_objects, len(self.latent_names)), np.float32)
        for k, obj in enumerate(objects):
            try:
                row = [*obj["3d_coords"], *obj["pixel_coords"], obj["rotation"]]
                if len(row) != 7:
                    raise ValueError("3d_coords and pixel_coords need 3 values each")
                for name, vocab in CLEVR_VOCAB.items():
                    if obj[name] not in vocab:
                        raise ValueError(f"{name} {obj[name]!r} is not one of {', '.join(vocab)}")
                    row.append(vocab.index(obj[name]))
                latents[k] = row
            except (KeyError, TypeError, ValueError) as err:
                raise DataFormatError(
                    self.scene_file,
                    f"{scene['image_filename']}, object {k}: {err} (expected CLEVR's object fields)",
                    index,
                ) from None
        if not path.is_file():
            raise DataFormatError(self.scene_file, f"image {str(path)!r} does not exist", index)
        image = read_png(path, origin)
        _expect_hw(image, self.hw, str(path), "the image")
        return self.make_record(image, None, latents, len(objects), str(path))


_CLEVRTEX_SPLITS = {"test": (0.0, 0.1), "val": (0.1, 0.2), "train": (0.2, 1.0), "all": (0.0, 1.0)}
_CLEVRTEX_LATENTS = ("rotation", "size", "shape", "material")


@READERS.register("clevrtex")
class ClevrTexReader(Reader):
    """CLEVRTex: the folder ``clevrtex_{variant}`` (or one that holds it); official splits."""

    format = "clevrtex"
    splits = ("train", "val", "test", "all")
    variants = ("full", "pbg", "vbg", "grassbg", "camo", "outd")
    default_crop = "clevrtex"
    hw = (240, 320)

    def __post_init__(self) -> None:
        super().__post_init__()
        root = Path(self.source)
        sub = f"clevrtex_{self.variant}"
        if root.name != sub and (root / sub).is_dir():
            root = root / sub
        self.root = root
        prefix = f"CLEVRTEX_{self.variant}_"
        pattern = re.compile(rf"^{re.escape(prefix)}(\d{{6}})\.png$")
        index: dict[int, Path] = {}
        for path in root.glob(f"**/{prefix}??????.png"):
            match = pattern.match(path.name)
            if match is None:
                continue
            number = int(match.group(1))
            if number in index:
                raise DataFormatError(path, f"image number {number} also at {index[number]}")
            index[number] = path
        if not index:
            raise FileNotFoundError(
                f"clevrtex: no {prefix}NNNNNN.png images under {str(root)!r} (variant "
                f"{self.variant!r}; pass --variant for another)" + listing_hint(root)
            )
        numbers = sorted(index)
        missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
        if missing:
            raise DataFormatError(
                root,
                f"images {', '.join(map(str, missing[:10]))}{', ...' if len(missing) > 10 else ''} "
                f"of {prefix}000000..{numbers[-1]:06d} are missing",
            )
        lo, hi = _CLEVRTEX_SPLITS[self.split]
        count = len(numbers)
        self.images = [index[n] for n in numbers[int(lo * count) : int(hi * count)]]
        if not self.images:
            raise DataFormatError(root, f"the {self.split!r} split of {count} images is empty")
        self.image_hw = self.hw
        self.max_objects = 10
        self.latent_names = _CLEVRTEX_LATENTS
        self._categories: dict[str, list[str]] | None = None

    def _paths(self, image: Path) -> tuple[Path, Path]:
        stem = image.name.removesuffix(".png")
        return image.with_name(f"{stem}_flat.png"), image.with_name(f"{stem}.json")

    def _meta(self, image: Path, index: int) -> list[dict[str, Any]]:
        _, meta = self._paths(image)
        try:
            objects = json.loads(meta.read_text(encoding="utf-8"))["objects"]
            for obj in objects:
                for key in _CLEVRTEX_LATENTS:
                    obj[key]  # noqa: B018 - presence check
        except FileNotFoundError:
            raise DataFormatError(meta, "missing (every image needs its .json)", index) from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataFormatError(
                meta,
                f"not a CLEVRTex scene ({err!r}); expected objects with "
                f"{', '.join(_CLEVRTEX_LATENTS)}",
                index,
            ) from None
        return objects

    @property
    def categories(self) -> dict[str, list[str]]:
        """Sorted vocabulary of every string-valued latent over the whole split."""
        if self._categories is None:
            seen: dict[str, set[str]] = {k: set() for k in _CLEVRTEX_LATENTS}
            for i, image in enumerate(self.images):
                for obj in self._meta(image, i):
                    for key in _CLEVRTEX_LATENTS:
                        if isinstance(obj[key], str):
                            seen[key].add(obj[key])
            self._categories = {k: sorted(v) for k, v in seen.items() if v}
        return self._categories

    def __len__(self) -> int:
        return len(self.images)

    def info(self) -> dict[str, Any]:
        return {"variant": self.variant, "categories": self.categories}

    def source_files(self, count: int | None = None) -> list[Path]:
        images = self.images[:count] if count is not None else self.images
        return [p for image in images for p in (image, *self._paths(image))]

    def records(self, start: int = 0) -> Iterator[Record]:
        categories = self.categories
        for i in range(start, len(self.images)):
            yield self._record(i, categories)

    def _record(self, index: int, categories: dict[str, list[str]]) -> Record:
        path = self.images[index]
        mask_path, meta_path = self._paths(path)
        objects = self._meta(path, index)
        if len(objects) > self.max_objects:
            raise DataFormatError(
                meta_path, f"{len(objects)} objects; expected at most {self.max_objects}", index
            )
        latents = np.zeros((self.max_objects, len(self.latent_names)), np.float32)
        for k, obj in enumerate(objects):
            for j, key in enumerate(_CLEVRTEX_LATENTS):
                value = obj[key]
                if isinstance(value, str):
                    latents[k, j] = categories[key].index(value)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    latents[k, j] = value
                else:
                    raise DataFormatError(
                        meta_path,
                        f"object {k}: {key} is {value!r}; expected a number or a name",
                        index,
                    )
        image = read_png(path, str(path))
        _expect_hw(image, self.hw, str(path), "the image")
        if not mask_path.is_file():
            raise DataFormatError(
                mask_path, "missing (every image needs its _flat.png mask)", index
            )
        mask = read_png(mask_path, str(mask_path), rgb=False)
        _expect_hw(mask, self.hw, str(mask_path), "the mask")
        if mask.size and int(mask.max()) > len(objects):
            raise DataFormatError(
                mask_path,
                f"mask label {int(mask.max())} but the scene has {len(objects)} objects; expected "
                f"labels 0..{len(objects)}",
                index,
            )
        return self.make_record(image, mask.astype(np.uint8), latents, len(objects), str(path))
