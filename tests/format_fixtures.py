"""Fixture files in the exact on-disk formats of the published datasets, written without their tools.

* ``encode_example`` is our own small ``tf.train.Example`` encoder (protobuf wire format written
  by hand): byte features become a BytesList with **one 1-byte entry per element** (zero bytes
  and 255s included), floats a packed FloatList, ints a packed Int64List; ``write_tfrecord``
  frames records with masked CRC-32C and GZIP-compresses the file, as DeepMind's files are.
* ``write_deepmind`` writes CLEVR-with-masks, Objects-Room, Multi-dSprites (masks [H, W, E, 1])
  and Tetrominoes files from random scenes and returns, per scene, the contract it must read as
  (computed from the scene's own entity map, not from the encoded bytes).
* ``write_ocl_h5``, ``write_clevr``, ``write_clevrtex``, ``write_spriteworld``,
  ``write_image_folder``: the other formats' layouts, each returning what was written.

Importable from any test (``pythonpath = ["tests"]``) and from ``benchmarks/bench_data.py``.
"""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------- protobuf / TFRecord


def crc32c_reference(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) bit by bit: slow and obviously right."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def _crc32c(data: bytes) -> int:
    from crc32c import crc32c  # fast; checked against `crc32c_reference` in the tests

    return crc32c(data)


def masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 → two's complement, 10 bytes
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def len_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def bytes_list(values: np.ndarray | list[bytes]) -> bytes:
    """BytesList: an array gives one 1-byte entry per element (DeepMind's encoding)."""
    if isinstance(values, np.ndarray):
        flat = np.ascontiguousarray(values, dtype=np.uint8).ravel()
        triples = np.empty((flat.size, 3), np.uint8)
        triples[:, 0], triples[:, 1], triples[:, 2] = 0x0A, 0x01, flat
        return triples.tobytes()
    return b"".join(len_field(1, v) for v in values)


def float_list(values: np.ndarray) -> bytes:
    return len_field(1, np.asarray(values, "<f4").ravel().tobytes())


def int64_list(values: np.ndarray) -> bytes:
    return len_field(1, b"".join(varint(int(v)) for v in np.asarray(values).ravel()))


def encode_example(features: dict[str, tuple[str, object]]) -> bytes:
    """A serialised ``tf.train.Example``; features: name → ("bytes" | "float" | "int64", values)."""
    entries = b""
    for key, (kind, values) in features.items():
        if kind == "bytes":
            feature = len_field(1, bytes_list(values))
        elif kind == "float":
            feature = len_field(2, float_list(values))
        elif kind == "int64":
            feature = len_field(3, int64_list(values))
        else:
            raise ValueError(kind)
        entries += len_field(1, len_field(1, key.encode()) + len_field(2, feature))
    return len_field(1, entries)


def frame(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (
        header + struct.pack("<I", masked_crc(header)) + data + struct.pack("<I", masked_crc(data))
    )


def write_tfrecord(path: Path, payloads: list[bytes], compress: bool = True) -> Path:
    raw = b"".join(frame(p) for p in payloads)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)
    return path


# --------------------------------------------------------------------------- DeepMind scenes
@dataclass
class Expected:
    """What a reader must yield for one scene (the contract, as uint8 / float32 arrays)."""

    image: np.ndarray
    mask: np.ndarray | None
    num_objects: int
    latents: np.ndarray
    visibility: np.ndarray


#: format → (H, W, entities per variant/split, background entities, mask layout, features)
DEEPMIND = {
    "clevr-with-masks": dict(hw=(240, 320), entities={"train": 11}, bg=1, layout="EHW1"),
    "objects-room": dict(
        hw=(64, 64),
        entities={"train": 7, "six_objects": 10, "empty_room": 4, "identical_color": 10},
        bg=4,
        layout="EHW1",
    ),
    "multi-dsprites": dict(
        hw=(64, 64),
        entities={"colored_on_grayscale": 6, "binarized": 4, "colored_on_colored": 5},
        bg=1,
        layout="HWE1",
    ),
    "tetrominoes": dict(hw=(35, 35), entities={"train": 4}, bg=1, layout="EHW1"),
}
FILE_NAMES = {
    ("clevr-with-masks", "train"): "clevr_with_masks_train.tfrecords",
    ("objects-room", "train"): "objects_room_train.tfrecords",
    ("objects-room", "six_objects"): "objects_room_test_six_objects.tfrecords",
    ("objects-room", "empty_room"): "objects_room_test_empty_room.tfrecords",
    ("objects-room", "identical_color"): "objects_room_test_identical_color.tfrecords",
    ("multi-dsprites", "colored_on_grayscale"): "multi_dsprites_colored_on_grayscale.tfrecords",
    ("multi-dsprites", "binarized"): "multi_dsprites_binarized.tfrecords",
    ("multi-dsprites", "colored_on_colored"): "multi_dsprites_colored_on_colored.tfrecords",
    ("tetrominoes", "train"): "tetrominoes_train.tfrecords",
}


def _latent_spec(fmt: str, variant: str) -> list[tuple[str, int, str]]:
    """(feature, width, kind) of the per-entity factors, in the reader's column order."""
    if fmt == "clevr-with-masks":
        return [
            ("x", 1, "float"),
            ("y", 1, "float"),
            ("z", 1, "float"),
            ("pixel_coords", 3, "float"),
            ("rotation", 1, "float"),
            ("size", 1, "bytes"),
            ("material", 1, "bytes"),
            ("shape", 1, "bytes"),
            ("color", 1, "bytes"),
        ]
    if fmt == "multi-dsprites":
        width = 1 if variant == "binarized" else 3
        return [
            ("x", 1, "float"),
            ("y", 1, "float"),
            ("shape", 1, "float"),
            ("orientation", 1, "float"),
            ("scale", 1, "float"),
            ("color", width, "float"),
        ]
    if fmt == "tetrominoes":
        return [("x", 1, "float"), ("y", 1, "float"), ("shape", 1, "float"), ("color", 3, "float")]
    return []


def deepmind_scene(
    rng: np.random.Generator, fmt: str, key: str, hidden_object: bool = False
) -> tuple[dict, Expected]:
    """Features of one random scene and the record a reader must make of it.

    Entities: the background(s) always, then a random number of objects at random entity
    positions (the others null, visibility 0, empty masks); each object owns a random
    rectangle, painted in entity order. `hidden_object` adds an object that owns no pixel.
    """
    spec = DEEPMIND[fmt]
    (h, w), e, nbg = spec["hw"], spec["entities"][key], spec["bg"]
    channels = 1 if key == "binarized" else 3
    image = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    image[0, 0, 0], image[0, 1, 0], image[1, 0, -1] = 0, 255, 0  # the bytes that go missing first
    entity = np.zeros((h, w), np.int64)
    if nbg == 4:  # Objects-Room: sky, floor, two wall halves as horizontal/vertical bands
        entity[h // 2 :, :] = 1
        entity[: h // 2, : w // 2] = 2
        entity[: h // 2, w // 2 :] = 3
        entity[: h // 6, :] = 0
    slots = list(range(nbg, e))
    n = int(rng.integers(0, len(slots) + 1)) if slots else 0
    objects = sorted(rng.choice(slots, size=n, replace=False).tolist()) if n else []
    hidden = None
    if hidden_object and len(objects) < len(slots):
        hidden = next(k for k in slots if k not in objects)
        objects = sorted([*objects, hidden])
    for k in objects:
        if k == hidden:
            continue
        y0, x0 = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        y1, x1 = y0 + int(rng.integers(2, h // 2)), x0 + int(rng.integers(2, w // 2))
        entity[y0:y1, x0:x1] = k
    masks = (np.arange(e)[:, None, None] == entity[None]).astype(np.uint8) * 255  # (E, H, W)
    visibility = np.zeros(e, np.float32)
    visibility[:nbg] = 1.0
    visibility[objects] = 1.0
    features: dict[str, tuple[str, object]] = {"image": ("bytes", image)}
    layout = masks[..., None] if spec["layout"] == "EHW1" else masks.transpose(1, 2, 0)[..., None]
    features["mask"] = ("bytes", layout)
    columns = []
    for name, width, kind in _latent_spec(fmt, key):
        if kind == "bytes":
            values = rng.integers(0, 256, size=e, dtype=np.uint8)
            values[0] = 0  # a zero code in the byte latents too
            columns.append(values.astype(np.float32)[:, None])
        else:
            values = rng.normal(size=(e, width)).astype(np.float32)
            columns.append(values)
        features[name] = (kind, values.squeeze(-1) if kind == "float" and width == 1 else values)
    if fmt != "objects-room":
        features["visibility"] = ("float", visibility)
    # the contract, from the scene itself
    if fmt == "objects-room":  # no visibility feature: an object is a non-empty mask
        objects = [k for k in range(nbg, e) if (entity == k).any()]
    label = np.zeros((h, w), np.uint8)
    for j, k in enumerate(objects):
        label[entity == k] = j + 1
    m = e - nbg
    width = sum(c.shape[1] for c in columns)
    latents = np.zeros((m, width), np.float32)
    if columns and objects:
        latents[: len(objects)] = np.concatenate(columns, axis=1)[objects]
    vis = np.zeros(m, bool)
    vis[: len(objects)] = [(label == j + 1).any() for j in range(len(objects))]
    rgb = np.repeat(image, 3, axis=2) if channels == 1 else image
    return features, Expected(rgb, label, len(objects), latents, vis)


def write_deepmind(
    folder: Path,
    fmt: str,
    n: int,
    key: str | None = None,
    seed: int = 0,
    hidden_object: bool = False,
    compress: bool = True,
) -> tuple[Path, list[Expected]]:
    """A DeepMind TFRecord of `n` random scenes (`key`: split or variant) and what it must read as."""
    key = key or next(iter(DEEPMIND[fmt]["entities"]))
    rng = np.random.default_rng(seed)
    payloads, expected = [], []
    for i in range(n):
        features, exp = deepmind_scene(rng, fmt, key, hidden_object=hidden_object and i == 0)
        payloads.append(encode_example(features))
        expected.append(exp)
    path = write_tfrecord(folder / FILE_NAMES[(fmt, key)], payloads, compress=compress)
    return path, expected


# --------------------------------------------------------------------------- other formats
def write_ocl_h5(
    folder: Path,
    name: str = "tetrominoes",
    n: int = 7,
    hw: tuple[int, int] = (35, 35),
    seed: int = 0,
) -> tuple[Path, list[Expected]]:
    """``{name}-full.hdf5`` + ``{name}-metadata.npy`` as object-centric-library writes them."""
    import h5py

    rng = np.random.default_rng(seed)
    nbg = 4 if name.startswith("objects_room") else 1
    e = nbg + 3
    h, w = hw
    images = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, e, size=(n, h, w, 1)).astype(np.uint8)
    visibility = np.zeros((n, e), np.float32)
    for i in range(n):
        visibility[i, np.unique(labels[i])] = 1.0
    x = rng.normal(size=(n, e)).astype(np.float32)
    color = rng.normal(size=(n, e, 3)).astype(np.float32)
    shape = rng.integers(0, 5, size=(n, e)).astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-full.hdf5"
    with h5py.File(path, "w") as f:
        f["image"], f["mask"], f["visibility"] = images, labels, visibility
        f["num_actual_objects"] = (visibility.sum(1) - nbg)[:, None]
        f["x"], f["color"], f["shape"] = x, color, shape
    metadata = {
        "x": {"type": "numerical", "shape": (e,), "mean": 0.0, "var": 1.0},
        "color": {"type": "numerical", "shape": (e, 3), "mean": 0.0, "var": 1.0},
        "shape": {"type": "categorical", "num_categories": 5},
        "visibility": {"type": "categorical", "num_categories": 2},
        "num_actual_objects": {"type": "dataset_property"},
        "self.dataset": {"type": "dataset_property", "num_samples": n},
    }
    np.save(folder / f"{name}-metadata.npy", metadata, allow_pickle=True)
    expected = []
    for i in range(n):
        objects = [k for k in range(nbg, e) if visibility[i, k] > 0]
        label = np.zeros((h, w), np.uint8)
        for j, k in enumerate(objects):
            label[labels[i, :, :, 0] == k] = j + 1
        cols = np.concatenate([color[i], shape[i][:, None].astype(np.float32), x[i][:, None]], 1)
        latents = np.zeros((e - nbg, 5), np.float32)  # sorted names: color_0..2, shape, x
        latents[: len(objects)] = cols[objects]
        vis = np.zeros(e - nbg, bool)
        vis[: len(objects)] = True
        expected.append(Expected(images[i], label, len(objects), latents, vis))
    return path, expected


CLEVR_SIZES = ("large", "small")
CLEVR_MATERIALS = ("rubber", "metal")
CLEVR_SHAPES = ("cube", "sphere", "cylinder")
CLEVR_COLORS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def write_clevr(
    folder: Path, n: int = 4, split: str = "train", seed: int = 0, counts: list[int] | None = None
) -> tuple[Path, list[Expected]]:
    """``CLEVR_v1.0/{images/split, scenes}`` with RGBA 320×480 PNGs and a scene file."""
    rng = np.random.default_rng(seed)
    root = folder / "CLEVR_v1.0"
    scenes, expected = [], []
    for i in range(n):
        rgba = rng.integers(0, 256, size=(320, 480, 4), dtype=np.uint8)
        name = f"CLEVR_{split}_{i:06d}.png"
        _png(root / "images" / split / name, rgba, "RGBA")
        k = counts[i] if counts else int(rng.integers(3, 11))
        objects, latents = [], np.zeros((10, 11), np.float32)
        for j in range(k):
            obj = {
                "3d_coords": rng.normal(size=3).round(3).tolist(),
                "pixel_coords": rng.integers(0, 480, size=3).tolist(),
                "rotation": float(rng.uniform(0, 360)),
                "size": CLEVR_SIZES[rng.integers(2)],
                "material": CLEVR_MATERIALS[rng.integers(2)],
                "shape": CLEVR_SHAPES[rng.integers(3)],
                "color": CLEVR_COLORS[rng.integers(8)],
            }
            objects.append(obj)
            latents[j] = [
                *obj["3d_coords"],
                *obj["pixel_coords"],
                obj["rotation"],
                CLEVR_SIZES.index(obj["size"]),
                CLEVR_MATERIALS.index(obj["material"]),
                CLEVR_SHAPES.index(obj["shape"]),
                CLEVR_COLORS.index(obj["color"]),
            ]
        scenes.append(
            {"image_index": i, "image_filename": name, "split": split, "objects": objects}
        )
        expected.append(Expected(rgba[..., :3].copy(), None, k, latents, np.arange(10) < k))
    scene_file = root / "scenes" / f"CLEVR_{split}_scenes.json"
    scene_file.parent.mkdir(parents=True, exist_ok=True)
    scene_file.write_text(json.dumps({"info": {"split": split}, "scenes": scenes[::-1]}))
    return root, expected


def write_clevrtex(
    folder: Path, n: int = 10, variant: str = "full", seed: int = 0
) -> tuple[Path, list[Expected], dict[str, list[str]]]:
    """``clevrtex_{variant}/{k}/CLEVRTEX_{variant}_{i:06d}{.png,_flat.png,.json}`` (240×320)."""
    rng = np.random.default_rng(seed)
    root = folder / f"clevrtex_{variant}"
    shapes, materials = ("cube", "cylinder", "monkey", "sphere"), ("Bricks", "Metal", "Wood")
    metas, images, masks = [], [], []
    for i in range(n):
        k = int(rng.integers(1, 11))
        rgba = rng.integers(0, 256, size=(240, 320, 4), dtype=np.uint8)
        mask = rng.integers(0, k + 1, size=(240, 320)).astype(np.uint8)
        objects = [
            {
                "shape": shapes[rng.integers(4)],
                "material": materials[rng.integers(3)],
                "size": float(rng.choice([0.4, 0.6, 0.9])),
                "rotation": float(rng.uniform(0, 360)),
                "3d_coords": rng.normal(size=3).tolist(),
            }
            for _ in range(k)
        ]
        stem = root / str(i // 4) / f"CLEVRTEX_{variant}_{i:06d}"
        _png(stem.with_name(stem.name + ".png"), rgba, "RGBA")
        _png(stem.with_name(stem.name + "_flat.png"), mask, "L")
        stem.with_name(stem.name + ".json").write_text(
            json.dumps({"ground_material": "Tiles", "objects": objects})
        )
        metas.append(objects)
        images.append(rgba[..., :3].copy())
        masks.append(mask)
    categories = {
        "shape": sorted({o["shape"] for m in metas for o in m}),
        "material": sorted({o["material"] for m in metas for o in m}),
    }
    expected = []
    for i in range(n):
        latents = np.zeros((10, 4), np.float32)  # rotation, size, shape, material
        for j, o in enumerate(metas[i]):
            latents[j] = [
                o["rotation"],
                o["size"],
                categories["shape"].index(o["shape"]),
                categories["material"].index(o["material"]),
            ]
        k = len(metas[i])
        vis = np.zeros(10, bool)
        vis[:k] = [(masks[i] == j + 1).any() for j in range(k)]
        expected.append(Expected(images[i], masks[i], k, latents, vis))
    return root, expected, categories


def write_spriteworld(
    folder: Path, n: int = 9, max_objects: int = 4, seed: int = 0, compressed: bool = False
) -> tuple[Path, list[Expected]]:
    """``{max_objects}_obj_sprites.npz``: arr_0 images, arr_1 [x, y, scale, hue, shape], arr_2 counts."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    counts = rng.integers(2, max_objects + 1, size=n)
    latents = rng.uniform(size=(n, max_objects, 5)).astype(np.float32)
    for i in range(n):
        latents[i, counts[i] :] = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{max_objects}_obj_sprites.npz"
    (np.savez_compressed if compressed else np.savez)(path, images, latents, counts)
    expected = [
        Expected(images[i], None, int(counts[i]), latents[i], np.arange(max_objects) < counts[i])
        for i in range(n)
    ]
    return path, expected


def write_image_folder(
    folder: Path, sizes: list[tuple[int, int]], seed: int = 0, suffix: str = ".png"
) -> tuple[Path, list[np.ndarray]]:
    """PNG (lossless) images of the given (H, W) sizes in nested folders; returns them sorted."""
    rng = np.random.default_rng(seed)
    images = []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        _png(folder / f"part{i % 2}" / f"img_{i:03d}{suffix}", image)
        images.append((f"part{i % 2}/img_{i:03d}{suffix}", image))
    return folder, [image for _, image in sorted(images, key=lambda t: t[0])]
