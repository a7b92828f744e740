"""Spriteworld ``.npz`` files (Brady et al. 2023) and plain image folders.

**Spriteworld** (``objects-identifiability``: ``data/datasets/{max_objects}_obj_sprites.npz``,
written by ``sprites_data_gen.py``): positional arrays ``arr_0`` images (N, 64, 64, 3) uint8,
``arr_1`` latents (N, M, 5) = ``[x, y, scale, hue, shape]`` per object, ``arr_2`` object counts
(N,). No masks: ``mask`` is all background and ``visibility`` marks the rows in use. The images
are streamed from the archive (stored or deflated), so a large file is never loaded whole.

**Image folder**: every ``.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff`` file under the folder
(recursively, sorted by relative path), converted to RGB; no masks, no objects (M = 0). With
``train``/``val``/``test`` subfolders, ``--split`` picks one; else the whole folder is ``train``.
Images of different sizes need ``--image-size`` (and a ``--crop``, default ``center``) at conversion.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from probslot.data.readers.base import READERS, DataFormatError, Reader, Record, listing_hint
from probslot.data.readers.clevr import read_png

__all__ = ["IMAGE_SUFFIXES", "ImageFolderReader", "SpriteworldReader"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SPRITEWORLD_LATENTS = ("x", "y", "scale", "hue", "shape")
_CHUNK = 1024


def _npy_header(member, origin: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except ValueError as err:
        raise DataFormatError(origin, f"not a .npy array ({err})") from None
    if fortran:
        raise DataFormatError(origin, "a Fortran-ordered array; expected C order")
    return shape, dtype


@READERS.register("spriteworld")
class SpriteworldReader(Reader):
    """One ``{max_objects}_obj_sprites.npz`` (or a folder holding exactly one ``*.npz``)."""

    format = "spriteworld"
    has_masks = False

    def __post_init__(self) -> None:
        super().__post_init__()
        source = Path(self.source)
        if source.is_dir():
            found = sorted(source.glob("*.npz"))
            if len(found) != 1:
                raise FileNotFoundError(
                    f"spriteworld: {str(source)!r} holds {len(found)} .npz files; pass the file"
                    + listing_hint(source)
                )
            source = found[0]
        self.path = source
        try:
            archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataFormatError(self.path, f"not an .npz archive ({err})") from None
        with archive:
            names = set(archive.namelist())
            for key in ("arr_0", "arr_1", "arr_2"):
                if f"{key}.npy" not in names:
                    raise DataFormatError(
                        self.path,
                        f"no array {key!r} (it holds {', '.join(sorted(names))}); expected arr_0 "
                        "images, arr_1 latents [x, y, scale, hue, shape], arr_2 object counts",
                    )
            with archive.open("arr_0.npy") as member:
                shape, dtype = _npy_header(member, f"{self.path}: arr_0")
        if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8:
            raise DataFormatError(
                self.path, f"arr_0 is {dtype} {shape}; expected uint8 images (N, H, W, 3)"
            )
        with np.load(self.path) as npz:
            latents, counts = npz["arr_1"], npz["arr_2"]
        n = shape[0]
        if latents.ndim != 3 or latents.shape[0] != n or latents.shape[2] != 5:
            raise DataFormatError(
                self.path, f"arr_1 has shape {latents.shape}; expected ({n}, max_objects, 5)"
            )
        counts = counts.reshape(-1)
        if counts.shape != (n,):
            raise DataFormatError(self.path, f"arr_2 has {counts.size} counts; expected {n}")
        bad = np.flatnonzero((counts < 0) | (counts > latents.shape[1]))
        if bad.size:
            raise DataFormatError(
                self.path,
                f"arr_2 = {counts[bad[0]]}; expected an object count in 0..{latents.shape[1]}",
                int(bad[0]),
            )
        if n == 0:
            raise DataFormatError(self.path, "the file holds no images")
        self.count = n
        self.latents = latents.astype(np.float32)
        self.counts = counts.astype(np.int64)
        self.image_hw = (shape[1], shape[2])
        self.max_objects = latents.shape[1]
        self.latent_names = _SPRITEWORLD_LATENTS

    def __len__(self) -> int:
        return self.count

    def source_files(self, count: int | None = None) -> list[Path]:
        return [self.path]

    def records(self, start: int = 0) -> Iterator[Record]:
        h, w = self.image_hw
        size = h * w * 3
        with zipfile.ZipFile(self.path) as archive, archive.open("arr_0.npy") as member:
            _npy_header(member, f"{self.path}: arr_0")
            skip = start * size
            while skip > 0:  # a deflated member cannot seek: read past the records done
                skip -= len(member.read(min(skip, 1 << 24)))
            for lo in range(start, self.count, _CHUNK):
                hi = min(lo + _CHUNK, self.count)
                buf = member.read((hi - lo) * size)
                if len(buf) != (hi - lo) * size:
                    raise DataFormatError(
                        self.path, f"arr_0 ends early ({len(buf) // size} of {hi - lo} images)", lo
                    )
                images = np.frombuffer(buf, np.uint8).reshape(hi - lo, h, w, 3)
                for j in range(hi - lo):
                    i = lo + j
                    yield self.make_record(
                        images[j],
                        None,
                        self.latents[i],
                        int(self.counts[i]),
                        f"{self.path}: record {i}",
                    )


@READERS.register("image-folder")
class ImageFolderReader(Reader):
    """A folder of images (no masks, no objects): for a researcher's own pictures."""

    format = "image-folder"
    splits = ("train", "val", "test")
    default_crop = "center"
    has_masks = False

    def __post_init__(self) -> None:
        explicit = self.split is not None
        super().__post_init__()
        root = Path(self.source)
        if not root.is_dir():
            raise FileNotFoundError(f"image-folder: {str(root)!r} is not a folder")
        split_dirs = [s for s in self.splits if (root / s).is_dir()]
        if split_dirs:
            if self.split not in split_dirs:
                raise FileNotFoundError(
                    f"image-folder: {str(root)!r} has the split folders {', '.join(split_dirs)} "
                    f"but no {self.split!r}"
                )
            root = root / self.split
        elif explicit and self.split != "train":
            raise FileNotFoundError(
                f"image-folder: {str(root)!r} has no {self.split!r} subfolder (without "
                "train/val/test subfolders the whole folder is the train split)"
            )
        self.root = root
        self.images = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not self.images:
            raise DataFormatError(
                root, f"no images (looked for {', '.join(IMAGE_SUFFIXES)} recursively)"
            )
        self.max_objects = 0
        self.latent_names = ()

    def __len__(self) -> int:
        return len(self.images)

    def source_files(self, count: int | None = None) -> list[Path]:
        return self.images[:count] if count is not None else list(self.images)

    def records(self, start: int = 0) -> Iterator[Record]:
        empty = np.zeros((0, 0), np.float32)
        for i in range(start, len(self.images)):
            image = read_png(self.images[i], str(self.images[i]))
            yield self.make_record(image, None, empty, 0, str(self.images[i]))
