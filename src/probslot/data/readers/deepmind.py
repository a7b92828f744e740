"""DeepMind's multi-object datasets (``multi_object_datasets``): GZIP TFRecords, no TensorFlow.

Files (Google Cloud Storage bucket ``multi-object-datasets``, Apache-2.0; one TFRecord each):

=================  ==========================================================  =======  ====
format             file (split / variant)                                      H×W      E
=================  ==========================================================  =======  ====
clevr-with-masks   clevr_with_masks/clevr_with_masks_train.tfrecords           240×320  11
objects-room       objects_room/objects_room_train.tfrecords (train)           64×64    7
                   objects_room_test_{six_objects,empty_room,identical_color}           10/4/10
multi-dsprites     multi_dsprites/multi_dsprites_{binarized,                   64×64    4/6/5
                   colored_on_grayscale, colored_on_colored}.tfrecords
tetrominoes        tetrominoes/tetrominoes_train.tfrecords                     35×35    4
=================  ==========================================================  =======  ====

E = entities per scene (background + objects; the number of masks). Every byte feature is a
BytesList with one 1-byte entry per element (``FixedLenFeature(shape, tf.string)`` decoded with
``decode_raw``); masks are [E, H, W, 1] with values 0/255, except Multi-dSprites: [H, W, E, 1].
The first entity is the background (Objects-Room: the first four — sky, floor, two wall
halves). ``visibility`` (float, [E]) marks the entities that are not null.

Mapping to the contract: the object rows are the non-background entities with visibility 1
(Objects-Room has no visibility: the non-background entities whose mask is not empty), in
their order; M = E − background entities; the label map gives each pixel to the entity with the
largest mask value, then background and null entities label 0 and object j label j + 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from probslot.data.readers.base import (
    READERS,
    DataFormatError,
    Reader,
    Record,
    find_file,
    label_map,
)
from probslot.data.readers.tfrecord import iter_records, parse_example

__all__ = ["ClevrWithMasksReader", "MultiDSpritesReader", "ObjectsRoomReader", "TetrominoesReader"]


class DeepMindReader(Reader):
    """Shared reading of one DeepMind TFRecord file (subclasses give the layout)."""

    #: float features → their columns in ``latent_names`` (width 1 or per-entity vectors)
    float_latents: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()
    #: uint8-coded categorical features (CLEVR: size, material, shape, color)
    byte_latents: ClassVar[tuple[str, ...]] = ()
    hw: ClassVar[tuple[int, int]] = (64, 64)
    num_background: ClassVar[int] = 1
    mask_layout: ClassVar[str] = "EHW1"  # or "HWE1" (Multi-dSprites)
    has_visibility: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.path = find_file(Path(self.source), self.file_names(), self.format)
        self._infer_from_name()
        self.image_hw = self.hw
        self.entities = self.num_entities()
        self.max_objects = self.entities - self.num_background
        self.latent_names = tuple(c for _, cols in self.float_latents for c in cols) + tuple(
            self.byte_latents
        )

    # ------------------------------------------------------------------ layout per subclass
    def file_names(self) -> list[str]:
        raise NotImplementedError

    def num_entities(self) -> int:
        raise NotImplementedError

    def channels(self) -> int:
        return 3

    def _infer_from_name(self) -> None:
        """A file given directly may name its split/variant (``..._colored_on_colored``)."""

    # ------------------------------------------------------------------ reading
    def source_files(self, count: int | None = None) -> list[Path]:
        return [self.path]

    def info(self) -> dict[str, Any]:
        return {"num_background": self.num_background, "entities": self.entities}

    def records(self, start: int = 0) -> Iterator[Record]:
        for index, data in iter_records(self.path, start=start):
            yield self.decode(data, index)

    def _feature(self, features: dict, name: str, index: int, count: int, what: str) -> Any:
        if name not in features:
            raise DataFormatError(
                self.path,
                f"no feature {name!r} (features present: {', '.join(sorted(features))}); "
                f"expected the {self.format} features {', '.join(self.expected_features())}",
                index,
            )
        value = features[name]
        if isinstance(value, list):  # a BytesList of longer entries: one raw string is fine too
            value = (
                np.frombuffer(value[0], dtype=np.uint8)
                if len(value) == 1
                else np.zeros(0, np.uint8)
            )
        if value.size != count:
            hint = self.shape_hint(name)
            raise DataFormatError(
                self.path,
                f"feature {name!r} has {value.size} values; expected {what} = {count}{hint}",
                index,
            )
        return value

    def shape_hint(self, name: str) -> str:
        return ""

    def expected_features(self) -> list[str]:
        names = ["image", "mask", *(n for n, _ in self.float_latents), *self.byte_latents]
        return names + (["visibility"] if self.has_visibility else [])

    def decode(self, data: memoryview, index: int) -> Record:
        try:
            features = parse_example(data)
        except (ValueError, IndexError, UnicodeDecodeError) as err:
            raise DataFormatError(
                self.path, f"not a tf.train.Example protobuf ({err})", index
            ) from None
        (h, w), c, e = self.hw, self.channels(), self.entities
        image = self._feature(features, "image", index, h * w * c, f"[{h}, {w}, {c}]").reshape(
            h, w, c
        )
        raw = self._feature(features, "mask", index, e * h * w, self._mask_text())
        if self.mask_layout == "HWE1":
            masks, axis = raw.reshape(h, w, e), -1
        else:
            masks, axis = raw.reshape(e, h, w), 0
        if self.has_visibility:
            vis = self._feature(features, "visibility", index, e, f"[{e}]")
            objects = [k for k in range(self.num_background, e) if vis[k] > 0]
        else:
            present = masks.reshape(-1, e).any(0) if axis == -1 else masks.reshape(e, -1).any(1)
            objects = [k for k in range(self.num_background, e) if present[k]]
        columns = []
        for name, cols in self.float_latents:
            width = len(cols)
            shape = f"[{e}]" if width == 1 else f"[{e}, {width}]"
            columns.append(self._feature(features, name, index, e * width, shape).reshape(e, width))
        for name in self.byte_latents:
            columns.append(self._feature(features, name, index, e, f"[{e}]").reshape(e, 1))
        latents = np.zeros((self.max_objects, len(self.latent_names)), np.float32)
        if columns and objects:
            latents[: len(objects)] = np.concatenate(
                [col.astype(np.float32) for col in columns], axis=1
            )[objects]
        mask = label_map(masks, objects, axis=axis)
        return self.make_record(image, mask, latents, len(objects), f"{self.path}: record {index}")

    def _mask_text(self) -> str:
        (h, w), e = self.hw, self.entities
        return f"[{h}, {w}, {e}, 1]" if self.mask_layout == "HWE1" else f"[{e}, {h}, {w}, 1]"


@READERS.register("clevr-with-masks")
class ClevrWithMasksReader(DeepMindReader):
    """CLEVR (with masks): 100,000 scenes of 3–10 objects, 240×320, 10 object rows (M)."""

    format = "clevr-with-masks"
    default_crop = "slot-attention"
    hw = (240, 320)
    float_latents = (
        ("x", ("x",)),
        ("y", ("y",)),
        ("z", ("z",)),
        ("pixel_coords", ("pixel_x", "pixel_y", "pixel_z")),
        ("rotation", ("rotation",)),
    )
    byte_latents = ("size", "material", "shape", "color")

    def file_names(self) -> list[str]:
        return ["clevr_with_masks_train.tfrecords"]

    def num_entities(self) -> int:
        return 11


#: Objects-Room's files and entity counts per split
_OBJECTS_ROOM = {
    "train": ("objects_room_train.tfrecords", 7),
    "six_objects": ("objects_room_test_six_objects.tfrecords", 10),
    "empty_room": ("objects_room_test_empty_room.tfrecords", 4),
    "identical_color": ("objects_room_test_identical_color.tfrecords", 10),
}


@READERS.register("objects-room")
class ObjectsRoomReader(DeepMindReader):
    """Objects-Room: 64×64, image and masks only; the first 4 entities are sky, floor, walls."""

    format = "objects-room"
    splits = tuple(_OBJECTS_ROOM)
    num_background = 4
    has_visibility = False

    def __post_init__(self) -> None:
        self._explicit_split = self.split is not None
        super().__post_init__()

    def _infer_from_name(self) -> None:
        if self._explicit_split:
            return
        for split, (name, _) in _OBJECTS_ROOM.items():
            if self.path.name == name:
                self.split = split

    def file_names(self) -> list[str]:
        return [_OBJECTS_ROOM[self.split][0]]

    def num_entities(self) -> int:
        return _OBJECTS_ROOM[self.split][1]

    def shape_hint(self, name: str) -> str:
        if name == "mask":
            return (
                f" (the {self.split!r} split has {self.entities} masks; pass --split for another)"
            )
        return ""


_MULTI_DSPRITES = {"colored_on_grayscale": 6, "binarized": 4, "colored_on_colored": 5}


@READERS.register("multi-dsprites")
class MultiDSpritesReader(DeepMindReader):
    """Multi-dSprites, 64×64, masks stored [H, W, E, 1]; variants differ in E and colour."""

    format = "multi-dsprites"
    variants = tuple(_MULTI_DSPRITES)
    mask_layout = "HWE1"
    float_latents = (
        ("x", ("x",)),
        ("y", ("y",)),
        ("shape", ("shape",)),
        ("orientation", ("orientation",)),
        ("scale", ("scale",)),
        ("color", ("color_r", "color_g", "color_b")),
    )

    def __post_init__(self) -> None:
        if self.variant is None:  # the file's name tells the variant; so does a folder's content
            source = Path(self.source)
            if source.is_dir():
                names = {
                    p.name for p in (*source.glob("*.tfrecords"), *source.glob("*/*.tfrecords"))
                }
            else:
                names = {source.name}
            found = [v for v in _MULTI_DSPRITES if f"multi_dsprites_{v}.tfrecords" in names]
            if len(found) > 1:
                raise ValueError(
                    f"{str(source)!r} holds the multi-dsprites variants {', '.join(found)}; "
                    "pass --variant to choose one"
                )
            self.variant = found[0] if found else None
        if self.variant == "binarized":
            self.float_latents = (*self.float_latents[:5], ("color", ("color",)))
        super().__post_init__()

    def channels(self) -> int:
        return 1 if self.variant == "binarized" else 3

    def file_names(self) -> list[str]:
        return [f"multi_dsprites_{self.variant}.tfrecords"]

    def num_entities(self) -> int:
        return _MULTI_DSPRITES[self.variant]

    def info(self) -> dict[str, Any]:
        return {**super().info(), "variant": self.variant}

    def shape_hint(self, name: str) -> str:
        return (
            f" (variant {self.variant!r}: {self.entities} masks, {self.channels()} channel(s); "
            f"pass --variant one of {', '.join(_MULTI_DSPRITES)} if the file is another)"
        )


@READERS.register("tetrominoes")
class TetrominoesReader(DeepMindReader):
    """Tetrominoes (Tetris): 35×35, background + 3 pieces; usually centre-cropped to 32×32."""

    format = "tetrominoes"
    default_crop = "center-32"
    hw = (35, 35)
    float_latents = (
        ("x", ("x",)),
        ("y", ("y",)),
        ("shape", ("shape",)),
        ("color", ("color_r", "color_g", "color_b")),
    )

    def file_names(self) -> list[str]:
        return ["tetrominoes_train.tfrecords"]

    def num_entities(self) -> int:
        return 4
