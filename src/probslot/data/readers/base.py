"""What every reader of a published dataset gives: `Record`s of the dataset contract, as uint8.

A reader opens the files a publisher distributes (a TFRecord, an HDF5 pair, a folder of PNGs
and JSON, an ``.npz``) and yields one `Record` per scene, in the source's order:

=============  ====================  =========================================================
field          dtype, shape          meaning (the contract of ``docs/data.md``, before scaling)
=============  ====================  =========================================================
image          uint8 (H, W, 3)       RGB as stored (grey images repeated to 3 channels)
mask           uint8 (H, W) | None   label map: 0 = background, k = the object in latent row
                                     k - 1; None when the source has no masks
num_objects    int                   foreground objects in the scene (latent rows in use)
latents        float32 (M, F)        per-object factors, rows >= num_objects are zero
visibility     bool (M,)             the object owns a pixel of `mask` (no masks: row in use)
origin         str                   ``file`` or ``file: record i``, for error messages
=============  ====================  =========================================================

Readers never scale, crop or resize: `probslot.data.store` does that, so a store converted
without ``--crop``/``--image-size`` holds exactly the bytes its reader yields (tested).

Errors name the file, the record and what was expected (`DataFormatError`, a ``ValueError``);
a missing file or folder is a ``FileNotFoundError`` that lists what is there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from probslot.registry import Registry, did_you_mean

__all__ = [
    "READERS",
    "DataFormatError",
    "Reader",
    "Record",
    "find_file",
    "label_map",
    "listing_hint",
    "visible_rows",
]

#: format name → reader class (``probslot data convert --format NAME``)
READERS: Registry[Reader] = Registry("format")


class DataFormatError(ValueError):
    """Bad input data: names the file, the record index (when there is one) and what was expected."""

    def __init__(self, file: str | os.PathLike[str], message: str, index: int | None = None):
        self.file = str(file)
        self.index = index
        where = f"{self.file}: record {index}" if index is not None else self.file
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Record:
    """One scene as a reader yields it (see the module docstring for the fields)."""

    image: np.ndarray
    mask: np.ndarray | None
    num_objects: int
    latents: np.ndarray
    visibility: np.ndarray
    origin: str = ""


@dataclass
class Reader:
    """Base class: a source (file or folder), its split and variant, and the records' layout.

    Subclasses set the class attributes and ``image_hw``, ``max_objects``, ``latent_names`` in
    ``__post_init__``, and implement `records` and `source_files`.

    Attributes:
        source: the file or folder given on the command line.
        split: one of the class's ``splits`` (None: the first).
        variant: one of the class's ``variants`` (None: inferred from the file name, or the first).
    """

    format: ClassVar[str] = ""
    #: bumped whenever a reader yields different bytes from the same files; a store records it
    version: ClassVar[int] = 1
    splits: ClassVar[tuple[str, ...]] = ("train",)
    variants: ClassVar[tuple[str, ...]] = ()
    #: the crop (`probslot.data.transforms.CROPS`) a training config applies by default
    default_crop: ClassVar[str] = "none"
    has_masks: ClassVar[bool] = True

    source: str | os.PathLike[str]
    split: str | None = None
    variant: str | None = None
    image_hw: tuple[int, int] | None = field(init=False, default=None)
    max_objects: int = field(init=False, default=0)
    latent_names: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        if not self.source.exists():
            raise FileNotFoundError(
                f"{self.format} source {str(self.source)!r} does not exist"
                + listing_hint(self.source.parent)
            )
        self.split = self._choose("split", self.split, self.splits)
        if self.variants:
            self.variant = self._choose("variant", self.variant, self.variants)
        elif self.variant is not None:
            raise ValueError(
                f"format {self.format!r} has no variants; got variant={self.variant!r}"
            )

    def _choose(self, what: str, value: str | None, choices: Sequence[str]) -> str:
        if value is None:
            return choices[0]
        if value not in choices:
            raise ValueError(
                f"format {self.format!r} has no {what} {value!r}.{did_you_mean(value, list(choices))} "
                f"{what.capitalize()}s: {', '.join(choices)}"
            )
        return value

    # ---------------------------------------------------------------- what subclasses implement
    def records(self, start: int = 0) -> Iterator[Record]:
        """Yield the records from index `start` on (records before it are skipped cheaply)."""
        raise NotImplementedError

    def source_files(self, count: int | None = None) -> list[Path]:
        """The files the first `count` records (None: all) were read from, in a fixed order."""
        raise NotImplementedError

    def __len__(self) -> int:
        """The number of records (raises TypeError where only a full read can tell)."""
        raise TypeError(f"a {self.format} source has no length before it is read")

    def info(self) -> dict[str, Any]:
        """Extra facts for the store's manifest (variant, background entities, vocabularies)."""
        return {}

    # ---------------------------------------------------------------- helpers for subclasses
    def make_record(
        self,
        image: np.ndarray,
        mask: np.ndarray | None,
        latents: np.ndarray,
        num_objects: int,
        origin: str,
    ) -> Record:
        """A `Record` with rows >= num_objects zeroed and visibility derived from the mask."""
        if image.ndim == 3 and image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        latents = np.asarray(latents, dtype=np.float32).reshape(
            self.max_objects, len(self.latent_names)
        )
        if num_objects < self.max_objects and latents[num_objects:].any():
            latents = latents.copy()
            latents[num_objects:] = 0.0
        return Record(
            image=np.ascontiguousarray(image, dtype=np.uint8),
            mask=mask,
            num_objects=int(num_objects),
            latents=latents,
            visibility=visible_rows(mask, num_objects, self.max_objects),
            origin=origin,
        )


def visible_rows(mask: np.ndarray | None, num_objects: int, max_objects: int) -> np.ndarray:
    """bool (M,): row k owns a pixel of `mask` (label k + 1); without a mask: k < num_objects."""
    if mask is None:
        return np.arange(max_objects) < num_objects
    counts = np.bincount(mask.ravel(), minlength=max_objects + 1)
    return counts[1 : max_objects + 1] > 0


def label_map(masks: np.ndarray, objects: Sequence[int], axis: int = 0) -> np.ndarray:
    """uint8 (H, W) label map from per-entity masks (values 0..255, e.g. DeepMind's 0/255).

    Each pixel goes to the entity with the largest mask value (ties: the lower entity index, so
    a pixel no mask covers goes to entity 0); entity ``objects[j]`` gets label j + 1 and every
    other entity (background, null rows) label 0.

    Args:
        masks: (E, H, W) with ``axis=0`` or (H, W, E) with ``axis=-1``.
        objects: the entity indices of the foreground objects, in latent-row order.
    """
    entity = np.argmax(masks, axis=axis)  # (H, W) entity index
    lut = np.zeros(masks.shape[axis], dtype=np.uint8)
    lut[np.asarray(objects, dtype=np.int64)] = np.arange(1, len(objects) + 1, dtype=np.uint8)
    return lut[entity]


def find_file(source: Path, names: Sequence[str], what: str) -> Path:
    """`source` if it is a file, else the first of `names` found in it or one folder below."""
    if source.is_file():
        return source
    for name in names:
        for candidate in (source / name, *sorted(source.glob(f"*/{name}"))):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"{what}: no {' or '.join(repr(n) for n in names)} in {str(source)!r} (nor one folder "
        f"below)" + listing_hint(source)
    )


def listing_hint(folder: Path, limit: int = 8) -> str:
    """``; 'folder' holds: a, b, ...`` (or ``is empty``) for a file-not-found message."""
    try:
        entries = sorted(p.name for p in folder.iterdir())
    except OSError:
        return ""
    if not entries:
        return f"; {str(folder)!r} is empty"
    shown = ", ".join(entries[:limit]) + (", ..." if len(entries) > limit else "")
    return f"; {str(folder)!r} holds: {shown}"
