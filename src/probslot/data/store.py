"""One fast local store for every reader: uint8 shards memory-mapped at load, plus a JSON manifest.

**Layout** (``probslot data convert SOURCE --format NAME --out DIR`` writes ``DIR/{split}/``)::

    DIR/{split}/manifest.json          written last, atomically: its presence means "finished"
    DIR/{split}/.convert.json          the resume state while a conversion runs
    DIR/{split}/{key}-{shard:05d}.npy  key: image uint8 (n, H, W, 3), mask uint8 (n, H, W) (only
                                       with masks), num_objects uint8 (n,), latents float32
                                       (n, M, F), visibility bool (n, M)
    DIR/{split}/sources.tsv            path, bytes, sha256 of every source file (> 64 files)

Shards hold ``max(1, 64 MiB // bytes per record)`` records (the last fewer), each file written
atomically with its sha256 in the resume state; an interrupted conversion resumes at the first
shard it had not finished and ends with the same shards, byte for byte, as one that was never
interrupted. The manifest records counts, shapes, the latent names, the crop and size applied,
the reader and its version, every shard's size and sha256, the source files' sizes and sha256
and object-count statistics; `open_store` refuses a store from a newer reader or layout.

**Loading**: `open_store(DIR, split=None)` is a dataset of the contract (``docs/data.md``) over
the stored bytes; the registered formats in `probslot.data.DATASETS` (``clevr-with-masks``,
``objects-room``, ...) open a store with a subset (`SUBSETS`), a crop (`probslot.data.transforms.CROPS`)
and an image size, and `build_store_split` cuts a training config's train/val/test from it.
Batches are read with ``__getitems__`` (one gather per shard, crop and resize on the whole batch).

**uint8 transfer**: ``StoreDataset(..., image_dtype="uint8", mask_dtype="uint8")`` (what
``build_split(cfg, split, uint8_transfer=True)`` and so the training DataModule use) returns the
stored bytes instead of the contract's float32 images and int64 masks, 4× and 8× fewer bytes for
DataLoader workers to hand over; `to_contract_dtypes` turns a batch of them into exactly the
contract's values on the device it reached.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from probslot.atomic import atomic_write_bytes, atomic_write_text
from probslot.data.contract import DATASETS
from probslot.data.readers import READERS, DataFormatError, Reader, Record
from probslot.data.transforms import CROPS, crop_box, resize_images, resize_masks
from probslot.registry import did_you_mean
from probslot.validation import check_bool, check_choice, check_int

__all__ = [
    "STORE_FORMATS",
    "STORE_VERSION",
    "SUBSETS",
    "StoreDataset",
    "build_store_split",
    "convert",
    "open_store",
    "store_info",
    "store_splits",
    "to_contract_dtypes",
]

#: the layout version of a store (bumped when the files change meaning)
STORE_VERSION = 1
#: the contract keys stored per record, in file order
_KEYS = ("image", "mask", "num_objects", "latents", "visibility")
ImageDtype = Literal["float32", "uint8"]
MaskDtype = Literal["int64", "uint8"]
_IMAGE_DTYPES: tuple[ImageDtype, ...] = ("float32", "uint8")
_MASK_DTYPES: tuple[MaskDtype, ...] = ("int64", "uint8")
_SHARD_BYTES = 64 << 20
_LIST_LIMIT = 64  # more source files than this go to sources.tsv

#: named subsets: name → (fewest objects, most objects, definition)
SUBSETS: dict[str, tuple[int, int, str]] = {
    "clevr6": (
        0,
        6,
        "CLEVR6: scenes with at most 6 objects (<= 6; IODINE, Slot Attention; train with 7 slots)",
    ),
    "clevr6-psa-eval": (
        0,
        5,
        "the PSA authors' evaluation subset: scenes with fewer than 6 objects (< 6, i.e. at most "
        "5), as their get_metrics filters clevr_10-full.hdf5 (paper-notes §6, §11.14)",
    ),
    "clevr10": (0, 10, "CLEVR10: every CLEVR scene (3-10 objects; train with 11 slots)"),
}


# =========================================================================== conversion
def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class _Progress:
    """A rich progress bar (or nothing): ``advance(n)``; total None shows a running count."""

    def __init__(self, enabled: bool, description: str, total: int | None, done: int = 0):
        self._bar = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, completed=done)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class _Layout:
    """Shapes of one record after crop/resize; every record of a store must match them."""

    def __init__(self, record: Record, max_objects: int, num_latents: int) -> None:
        self.image = tuple(record.image.shape)
        self.has_mask = record.mask is not None
        self.max_objects, self.num_latents = max_objects, num_latents
        per_record = (
            int(np.prod(self.image))
            + (self.image[0] * self.image[1] if self.has_mask else 0)
            + 1
            + 4 * max_objects * num_latents
            + max_objects
        )
        self.shard_items = max(1, _SHARD_BYTES // per_record)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": list(self.image),
            "has_mask": self.has_mask,
            "shard_items": self.shard_items,
        }

    def check(self, record: Record, index: int, source: str) -> None:
        if tuple(record.image.shape) != self.image:
            raise DataFormatError(
                record.origin or source,
                f"the image is {tuple(record.image.shape)}; expected {self.image} like the records "
                "before it. Pass --image-size (with --crop center) to bring every image to one size",
                index if not record.origin else None,
            )
        if record.mask is not None and tuple(record.mask.shape) != self.image[:2]:
            raise DataFormatError(
                record.origin or source,
                f"the mask is {tuple(record.mask.shape)}; expected {self.image[:2]} (the image's H, W)",
            )

    def buffers(self) -> dict[str, np.ndarray]:
        n, (h, w, c) = self.shard_items, self.image
        out = {
            "image": np.empty((n, h, w, c), np.uint8),
            "num_objects": np.empty(n, np.uint8),
            "latents": np.empty((n, self.max_objects, self.num_latents), np.float32),
            "visibility": np.empty((n, self.max_objects), bool),
        }
        if self.has_mask:
            out["mask"] = np.empty((n, h, w), np.uint8)
        return {k: out[k] for k in _KEYS if k in out}


def _transform(record: Record, crop: str, image_size: int | None, max_objects: int) -> Record:
    """`record` cropped and resized as the conversion asks (visibility re-derived from the mask)."""
    if crop == "none" and image_size is None:
        return record
    h, w = record.image.shape[:2]
    try:
        top, bottom, left, right = crop_box(crop, h, w)
    except ValueError as err:
        raise DataFormatError(record.origin, str(err)) from None
    image = record.image[top:bottom, left:right]
    mask = record.mask[top:bottom, left:right] if record.mask is not None else None
    if image_size is not None:
        size = (image_size, image_size)
        tensor = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None]
        image = resize_images(tensor, size)[0].permute(1, 2, 0).numpy()
        if mask is not None:
            mask = np.ascontiguousarray(resize_masks(mask[None], size)[0])
    vis = record.visibility
    if mask is not None:
        counts = np.bincount(mask.ravel(), minlength=max_objects + 1)
        vis = counts[1 : max_objects + 1] > 0
    return Record(
        np.ascontiguousarray(image), mask, record.num_objects, record.latents, vis, record.origin
    )


def _write_shard(split_dir: Path, index: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    files = {}
    for key, array in arrays.items():
        name = f"{key}-{index:05d}.npy"
        data = _npy_bytes(array)
        atomic_write_bytes(split_dir / name, data)
        files[key] = {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return {"count": int(len(arrays["image"])), "files": files}


def _settings(
    reader: Reader, fmt: str, limit: int | None, image_size: int | None, crop: str
) -> dict:
    return {
        "format": fmt,
        "reader_version": reader.version,
        "store_version": STORE_VERSION,
        "source": str(Path(reader.source).resolve()),
        "split": reader.split,
        "variant": reader.variant,
        "limit": limit,
        "image_size": image_size,
        "crop": crop,
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataFormatError(path, f"not a readable JSON file ({err})") from None


def _differences(old: dict, new: dict) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} {old.get(k)!r} → {new[k]!r}" for k in keys)


def _prepare(split_dir: Path, settings: dict, overwrite: bool) -> dict[str, Any] | None:
    """The resume state to continue from, None when the split is already finished as asked."""
    manifest, state_path = split_dir / "manifest.json", split_dir / ".convert.json"
    if manifest.exists():
        old = _read_json(manifest).get("settings", {})
        if not overwrite:
            if old == settings:
                return None
            raise FileExistsError(
                f"{split_dir} already holds a finished store converted with other settings "
                f"({_differences(old, settings)}); pass --overwrite to replace it or choose another --out"
            )
        shutil.rmtree(split_dir)
    elif state_path.exists():
        state = _read_json(state_path)
        if state.get("settings") == settings and not overwrite:
            for shard in state["shards"]:  # atomic writes: a listed shard is whole unless edited
                for entry in shard["files"].values():
                    path = split_dir / entry["name"]
                    if not path.is_file() or path.stat().st_size != entry["bytes"]:
                        raise DataFormatError(
                            path,
                            "a finished shard of the interrupted conversion is missing or changed; "
                            "pass --overwrite to convert from the start",
                        )
            for tmp in split_dir.glob(".*.tmp*"):  # a write cut short by the interruption
                tmp.unlink()
            return state
        if not overwrite:
            raise FileExistsError(
                f"{split_dir} holds an unfinished conversion with other settings "
                f"({_differences(state.get('settings', {}), settings)}); rerun it with the same "
                "options to resume, or pass --overwrite to start afresh"
            )
        shutil.rmtree(split_dir)
    elif split_dir.exists() and any(split_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{split_dir} exists and is not a probslot store; choose another --out or pass "
                "--overwrite to replace it"
            )
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    state = {"settings": settings, "count": 0, "shards": [], "layout": None}
    atomic_write_text(state_path, json.dumps(state, indent=1))
    return state


def convert(
    source: str | os.PathLike[str],
    format: str,
    out: str | os.PathLike[str],
    *,
    split: str | None = None,
    variant: str | None = None,
    limit: int | None = None,
    image_size: int | None = None,
    crop: str = "none",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Stream a reader into the store ``out/{split}`` and return that folder.

    Resumes an interrupted conversion with the same settings; a finished one with the same
    settings is left as it is. See the module docstring for the layout.

    Args:
        source: the file or folder the publisher distributes (see `probslot.data.readers`).
        format: a name in `READERS` (``clevr-with-masks``, ``objects-room``, ...).
        out: the store folder (``data.root`` of a training config).
        split, variant: of the source (None: the format's first, or what the file name says).
        limit: convert only the first `limit` records.
        image_size: resize every image (after `crop`) to this square side; None keeps it.
        crop: a name in `probslot.data.transforms.CROPS`, applied before `image_size`.
        overwrite: replace a store (finished or not) converted with other settings.
        progress: show a progress bar.

    Raises:
        ValueError: an unknown format, split or variant (with "did you mean"), bad records
            (`DataFormatError`: file, record index, what was expected), an empty source.
        FileNotFoundError: the source or one of its files is missing.
        FileExistsError: `out` holds another store and `overwrite` is False.
    """
    reader_cls = READERS.get(format)
    if limit is not None:
        check_int("limit", limit, low=1)
    if image_size is not None:
        check_int("image_size", image_size, low=8)
    check_choice("crop", crop, list(CROPS))
    check_bool("overwrite", overwrite)
    reader = reader_cls(source, split=split, variant=variant)
    split_dir = Path(out) / str(reader.split)
    settings = _settings(reader, format, limit, image_size, crop)
    state = _prepare(split_dir, settings, overwrite)
    if state is None:
        if progress:
            print(f"{split_dir} is already converted with these settings")
        return split_dir
    started = time.perf_counter()
    try:
        total = len(reader)
    except TypeError:
        total = None
    if limit is not None:
        total = min(limit, total) if total is not None else limit
    done = int(state["count"])
    bar = _Progress(progress, f"{format} → {split_dir}", total, done)
    try:
        _convert_records(reader, split_dir, state, limit, image_size, crop, bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted after {state['count']} records; run the same command again to resume")
        raise
    finally:
        bar.close()
    if state["count"] == 0:
        shutil.rmtree(split_dir)
        raise DataFormatError(reader.source, f"the {format} source holds no records (empty source)")
    manifest = _finish(reader, split_dir, state, settings, progress)
    manifest["conversion_seconds"] = round(time.perf_counter() - started, 2)
    atomic_write_text(split_dir / "manifest.json", json.dumps(manifest, indent=1))
    (split_dir / ".convert.json").unlink()
    return split_dir


def _convert_records(
    reader: Reader,
    split_dir: Path,
    state: dict[str, Any],
    limit: int | None,
    image_size: int | None,
    crop: str,
    bar: _Progress,
) -> None:
    layout = None
    buffers: dict[str, np.ndarray] = {}
    fill = 0
    index = int(state["count"])
    state_path = split_dir / ".convert.json"

    def flush() -> None:
        nonlocal fill
        shard = _write_shard(
            split_dir, len(state["shards"]), {k: v[:fill] for k, v in buffers.items()}
        )
        state["shards"].append(shard)
        state["count"] += fill
        state["layout"] = layout.to_json()
        atomic_write_text(state_path, json.dumps(state, indent=1))
        bar.advance(fill)
        fill = 0

    for record in reader.records(start=index):
        if limit is not None and index >= limit:
            break
        record = _transform(record, crop, image_size, reader.max_objects)
        if layout is None:
            layout = _Layout(record, reader.max_objects, len(reader.latent_names))
            saved = state.get("layout")
            if saved is not None and saved != layout.to_json():
                raise DataFormatError(
                    record.origin,
                    f"records now have the layout {layout.to_json()}, the "
                    f"interrupted conversion had {saved}; pass --overwrite",
                )
            buffers = layout.buffers()
        layout.check(record, index, str(reader.source))
        buffers["image"][fill] = record.image
        if "mask" in buffers:
            buffers["mask"][fill] = record.mask
        buffers["num_objects"][fill] = record.num_objects
        buffers["latents"][fill] = record.latents
        buffers["visibility"][fill] = record.visibility
        fill += 1
        index += 1
        if fill == layout.shard_items:
            flush()
    if fill:
        flush()


def _finish(
    reader: Reader, split_dir: Path, state: dict, settings: dict, progress: bool
) -> dict[str, Any]:
    count = int(state["count"])
    files = reader.source_files(count)
    base = Path(reader.source)
    base = base if base.is_dir() else base.parent
    bar = _Progress(progress, "sha256 of the source files", len(files))
    rows = []
    for path in files:
        try:
            rel = path.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            rel = str(path.resolve())
        rows.append({"path": rel, "bytes": path.stat().st_size, "sha256": _sha256_file(path)})
        bar.advance(1)
    bar.close()
    if len(rows) > _LIST_LIMIT:
        text = "".join(f"{r['path']}\t{r['bytes']}\t{r['sha256']}\n" for r in rows)
        atomic_write_text(split_dir / "sources.tsv", text)
        sources: Any = {
            "files": len(rows),
            "bytes": sum(r["bytes"] for r in rows),
            "sha256_of_list": hashlib.sha256(text.encode()).hexdigest(),
            "list": "sources.tsv",
        }
    else:
        sources = rows
    nobj = np.concatenate(
        [np.load(split_dir / s["files"]["num_objects"]["name"]) for s in state["shards"]]
    )
    vis = np.concatenate(
        [np.load(split_dir / s["files"]["visibility"]["name"]) for s in state["shards"]]
    )
    layout = state["layout"]
    info = reader.info()
    return {
        "probslot_store": STORE_VERSION,
        "format": settings["format"],
        "reader_version": reader.version,
        "split": reader.split,
        "variant": reader.variant,
        "count": count,
        "image_shape": layout["image"],
        "has_masks": layout["has_mask"],
        "max_objects": reader.max_objects,
        "latent_names": list(reader.latent_names),
        "source_hw": list(reader.image_hw) if reader.image_hw else None,
        "crop": settings["crop"],
        "image_size": settings["image_size"],
        "default_crop": info.pop("default_crop", reader.default_crop),
        "info": info,
        "settings": settings,
        "shards": state["shards"],
        "sources": sources,
        "statistics": {
            "num_objects": _histogram(nobj),
            "visible_objects": _histogram(vis.sum(1) if vis.size else np.zeros(len(nobj), int)),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "probslot_version": _version(),
    }


def _histogram(values: np.ndarray) -> dict[str, int]:
    counts = np.bincount(values.astype(np.int64))
    return {str(k): int(c) for k, c in enumerate(counts) if c}


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("probslot")
    except md.PackageNotFoundError:  # pragma: no cover - an uninstalled checkout
        return "unknown"


# =========================================================================== reading
def store_splits(root: str | os.PathLike[str]) -> dict[str, Path]:
    """The finished splits of a store: ``{split: folder}`` (a split folder itself works too).

    Raises:
        FileNotFoundError: `root` does not exist or holds no store.
        ValueError: it holds only unfinished conversions (the message says how to resume).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"store {str(root)!r} does not exist; convert a dataset into it with "
            "`probslot data convert SOURCE --format NAME --out DIR`"
        )
    if (root / "manifest.json").is_file():
        return {str(_read_json(root / "manifest.json").get("split")): root}
    if (root / ".convert.json").is_file():
        raise ValueError(_unfinished(root))
    found = {d.name: d for d in sorted(root.iterdir()) if (d / "manifest.json").is_file()}
    if not found:
        unfinished = [d for d in sorted(root.iterdir()) if (d / ".convert.json").is_file()]
        if unfinished:
            raise ValueError(_unfinished(unfinished[0]))
        raise FileNotFoundError(
            f"{str(root)!r} holds no probslot store (no */manifest.json); convert a dataset into "
            "it with `probslot data convert SOURCE --format NAME --out DIR`"
        )
    return found


def _unfinished(split_dir: Path) -> str:
    state = _read_json(split_dir / ".convert.json")
    s = state.get("settings", {})
    return (
        f"{split_dir} is an unfinished conversion ({state.get('count', 0)} records so far, not a "
        f"finished store); run `probslot data convert {s.get('source')} --format {s.get('format')} "
        f"--out {split_dir.parent}` with the same options again to resume it"
    )


def _choose_split(root: str | os.PathLike[str], split: str | None) -> Path:
    splits = store_splits(root)
    if split is None:
        if len(splits) > 1:
            raise ValueError(
                f"store {str(root)!r} holds the splits {', '.join(splits)}; choose one (split=...)"
            )
        return next(iter(splits.values()))
    if split not in splits:
        unfinished = Path(root) / split / ".convert.json"
        if unfinished.is_file():
            raise ValueError(_unfinished(unfinished.parent))
        raise ValueError(
            f"store {str(root)!r} has no split {split!r}.{did_you_mean(split, list(splits))} "
            f"Splits: {', '.join(splits)}"
        )
    return splits[split]


def read_manifest(split_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of one finished split folder, checked against this probslot's versions."""
    path = Path(split_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: not a finished store split")
    manifest = _read_json(path)
    layout = manifest.get("probslot_store")
    if not isinstance(layout, int) or layout > STORE_VERSION:
        raise ValueError(
            f"{path}: store layout version {layout!r}; this probslot reads up to {STORE_VERSION}. "
            "Upgrade probslot, or convert the source again with this one"
        )
    fmt = manifest.get("format")
    reader = READERS.get(str(fmt))
    version = manifest.get("reader_version")
    if not isinstance(version, int) or version > reader.version:
        raise ValueError(
            f"{path}: written by the {fmt} reader version {version!r}, newer than this probslot's "
            f"(version {reader.version}); upgrade probslot, or convert the source again with this one"
        )
    return manifest


class _Files:
    """The shard files of one split, memory-mapped on first use (per process: never pickled)."""

    def __init__(self, split_dir: Path, manifest: dict[str, Any]) -> None:
        self.dir = split_dir
        self.shards = manifest["shards"]
        self.starts = np.cumsum([0, *(s["count"] for s in self.shards)])
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": {}}

    def array(self, key: str, shard: int) -> np.ndarray:
        mm = self._maps.get((key, shard))
        if mm is None:
            name = self.shards[shard]["files"][key]["name"]
            mm = self._maps[(key, shard)] = np.load(self.dir / name, mmap_mode="r")
        return mm

    def gather(self, key: str, rows: np.ndarray) -> np.ndarray:
        """The stored values of `key` at store rows `rows` (any order), as one array."""
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        first = self.array(key, int(shard_of[0])) if len(rows) else self.array(key, 0)
        if len(rows) and shard_of[0] == shard_of[-1] and (shard_of == shard_of[0]).all():
            return np.asarray(first[rows - self.starts[shard_of[0]]])  # one shard: one copy
        out = np.empty((len(rows), *first.shape[1:]), first.dtype)
        for shard in np.unique(shard_of):
            sel = shard_of == shard
            out[sel] = self.array(key, int(shard))[rows[sel] - self.starts[shard]]
        return out

    def whole(self, key: str) -> np.ndarray:
        return np.concatenate([np.asarray(self.array(key, s)) for s in range(len(self.shards))])


class StoreDataset(Dataset):
    """A dataset of the contract over one store split (a selection of its rows, cropped and resized).

    ``store[i]`` is the item of row ``indices[i]``: ``image`` float32 (3, h, w) in [0, 1] (stored
    uint8 / 255, cropped to `box`, resized to `size` bilinearly with antialiasing), ``mask``
    int64 (h, w) (cropped, resized nearest; all zeros when the source has no masks),
    ``num_objects`` int, ``latents`` float32 (M, F) and ``visibility`` bool (M,) (re-derived
    from the mask after a crop or resize) with M = `max_objects`. Batches go through
    ``__getitems__``: one gather per shard and one resize for the whole batch.

    ``image_dtype="uint8"`` returns the image as uint8 (3, h, w), the bytes whose / 255 is the
    float32 image, and ``mask_dtype="uint8"`` the mask as uint8: a loader worker then hands the
    main process 4× (image) and 8× (mask) fewer bytes, and `to_contract_dtypes` restores the
    contract on the device. Items of either setting break the contract (``check_image_item``),
    so only loaders whose batches go through `to_contract_dtypes` use them (training's).

    Attributes:
        manifest: the split's manifest (``read_manifest``); `latent_names`, `max_objects`,
        `has_masks`, `format` and `split` come from it.
    """

    def __init__(
        self,
        split_dir: str | os.PathLike[str],
        indices: Sequence[int] | np.ndarray | None = None,
        box: tuple[int, int, int, int] | None = None,
        size: tuple[int, int] | None = None,
        max_objects: int | None = None,
        image_dtype: ImageDtype = "float32",
        mask_dtype: MaskDtype = "int64",
    ) -> None:
        self.image_dtype: ImageDtype = check_choice("image_dtype", image_dtype, _IMAGE_DTYPES)
        self.mask_dtype: MaskDtype = check_choice("mask_dtype", mask_dtype, _MASK_DTYPES)
        self.path = Path(split_dir)
        self.manifest = read_manifest(self.path)
        self._files = _Files(self.path, self.manifest)
        count = int(self.manifest["count"])
        self.indices = np.arange(count) if indices is None else np.asarray(indices, np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= count):
            raise IndexError(f"store rows must lie in [0, {count}); got {self.indices.min()}..")
        h, w = self.manifest["image_shape"][:2]
        self.box = box if box is not None and tuple(box) != (0, h, 0, w) else None
        self.size = tuple(size) if size is not None else None
        stored = int(self.manifest["max_objects"])
        self.max_objects = stored if max_objects is None else min(stored, int(max_objects))
        self.latent_names: tuple[str, ...] = tuple(self.manifest["latent_names"])
        self.has_masks: bool = bool(self.manifest["has_masks"])
        self.format: str = self.manifest["format"]
        self.split: str = self.manifest["split"]

    def __len__(self) -> int:
        return int(self.indices.size)

    def __repr__(self) -> str:
        extra = f", crop={self.box}" if self.box else ""
        extra += f", size={self.size}" if self.size else ""
        if (self.image_dtype, self.mask_dtype) != ("float32", "int64"):
            extra += f", image {self.image_dtype}, mask {self.mask_dtype}"
        return f"StoreDataset({str(self.path)!r}, {self.format}, {len(self)} items{extra})"

    def with_dtypes(
        self, image_dtype: ImageDtype = "float32", mask_dtype: MaskDtype = "int64"
    ) -> StoreDataset:
        """This view (same rows, crop and size, shared memory maps) returning `image_dtype`
        images and `mask_dtype` masks."""
        view = copy.copy(self)
        view.image_dtype = check_choice("image_dtype", image_dtype, _IMAGE_DTYPES)
        view.mask_dtype = check_choice("mask_dtype", mask_dtype, _MASK_DTYPES)
        return view

    @property
    def image_hw(self) -> tuple[int, int]:
        """(h, w) of the images this dataset returns."""
        if self.size is not None:
            return self.size
        if self.box is not None:
            return self.box[1] - self.box[0], self.box[3] - self.box[2]
        h, w = self.manifest["image_shape"][:2]
        return h, w

    def raw(self, key: str, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """The stored arrays of `key` at these positions, exactly as written (no crop or resize)."""
        return self._files.gather(key, self.indices[np.asarray(positions, np.int64)])

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a store view of {n} items")
        return self.__getitems__([i % n])[0]

    def __getitems__(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        rows = self.indices[np.asarray(positions, np.int64)]
        b, m = len(rows), self.max_objects
        images = self._files.gather("image", rows)  # (b, H, W, 3) uint8
        top, bottom, left, right = self.box or (0, images.shape[1], 0, images.shape[2])
        tensor = torch.from_numpy(images)[:, top:bottom, left:right].permute(0, 3, 1, 2)
        if self.size is not None:
            tensor = resize_images(tensor, self.size)  # uint8 (b, 3, h, w), channels-last
        h, w = tensor.shape[-2:]
        if self.image_dtype == "uint8":
            tensor = tensor.contiguous()  # (b, 3, h, w) uint8, laid out as the float32 batch
        else:  # (b, 3, h, w) in [0, 1]
            tensor = torch.div(tensor, 255.0, out=torch.empty((b, 3, h, w)))
        num_objects = self._files.gather("num_objects", rows).astype(np.int64)
        latents = torch.from_numpy(self._files.gather("latents", rows)[:, :m])
        if self.has_masks:
            masks = self._files.gather("mask", rows)[:, top:bottom, left:right]
            if self.size is not None:
                masks = resize_masks(masks, self.size)
            masks = np.ascontiguousarray(masks)  # (b, h, w) uint8
            if self.box is not None or self.size is not None or m < self.manifest["max_objects"]:
                labels = masks.reshape(b, -1) + (np.arange(b) * (m + 1))[:, None]  # int64
                counts = np.bincount(labels.ravel(), minlength=b * (m + 1))
                vis = counts.reshape(b, m + 1)[:, 1:] > 0
            else:
                vis = self._files.gather("visibility", rows)
            mask_t = torch.from_numpy(masks).to(getattr(torch, self.mask_dtype))
        else:
            vis = self._files.gather("visibility", rows)[:, :m]
            mask_t = torch.zeros((b, h, w), dtype=getattr(torch, self.mask_dtype))
        vis_t = torch.from_numpy(np.ascontiguousarray(vis[:, :m]))
        return [
            {
                "image": img,
                "mask": msk,
                "num_objects": int(n),
                "latents": lat,
                "visibility": v,
            }
            for img, msk, n, lat, v in zip(
                tensor.unbind(0), mask_t.unbind(0), num_objects, latents.unbind(0), vis_t.unbind(0)
            )
        ]


def to_contract_dtypes(batch: Any) -> Any:
    """A collated batch with the contract's dtypes: a uint8 ``image`` (b, 3, H, W) becomes
    float32 / 255 and a uint8 ``mask`` (b, H, W) int64, on the device the batch is on.

    The values are exactly those of the float32 loading path (``StoreDataset`` with the default
    dtypes). The divisor is a tensor on the batch's device, not a Python number, because CUDA
    divides by a number as a multiplication by its float32 reciprocal, which differs in the last
    bit for 126 of the 256 byte values (tests/data/test_data_store_uint8.py checks the CPU, and
    the GPU under ``pytest -m cuda``). Batches already in the contract (float images, int64
    masks) and non-dict batches are returned as they are.
    """
    if not isinstance(batch, dict):
        return batch
    image, mask = batch.get("image"), batch.get("mask")
    byte_image = isinstance(image, torch.Tensor) and image.dtype == torch.uint8
    byte_mask = isinstance(mask, torch.Tensor) and mask.dtype == torch.uint8
    if not (byte_image or byte_mask):
        return batch
    out = dict(batch)
    if byte_image:
        divisor = torch.full((), 255.0, device=image.device)
        out["image"] = image.to(torch.float32).div_(divisor)  # (b, 3, H, W) in [0, 1]
    if byte_mask:
        out["mask"] = mask.to(torch.int64)
    return out


def open_store(root: str | os.PathLike[str], split: str | None = None) -> StoreDataset:
    """The dataset of the contract over one split of a converted store (every row, as stored).

    Args:
        root: a store folder (``probslot data convert ... --out DIR``) or one of its split folders.
        split: the split to open; None when the store holds only one.
    """
    return StoreDataset(_choose_split(root, split))


# =========================================================================== registered formats
def _object_range(subset: str | None, object_range: Sequence[int] | None) -> tuple[int, int] | None:
    if subset is not None and object_range is not None:
        raise ValueError("give subset or object_range, not both")
    if subset is not None:
        check_choice("subset", subset, list(SUBSETS))
        return SUBSETS[subset][0], SUBSETS[subset][1]
    if object_range is None:
        return None
    if isinstance(object_range, (str, bytes)) or len(object_range) != 2:
        raise ValueError(f"object_range must be [fewest, most] objects; got {object_range!r}")
    lo = check_int("object_range[0]", object_range[0], low=0)
    hi = check_int("object_range[1]", object_range[1], low=lo)
    return lo, hi


def _resolve_crop(manifest: dict[str, Any], crop: str) -> tuple[int, int, int, int] | None:
    check_choice("crop", crop, ["default", *CROPS])
    name = manifest.get("default_crop", "none") if crop == "default" else crop
    applied, size = manifest.get("crop", "none"), manifest.get("image_size")
    if name == applied:
        return None
    if applied != "none" or size is not None:
        raise ValueError(
            f"the store was converted with --crop {applied} --image-size {size}, so it cannot be "
            f"cropped to {name!r} any more: set dataset_kwargs.crop={applied!r}, or convert the "
            "source again with --crop none and no --image-size"
        )
    h, w = manifest["image_shape"][:2]
    return crop_box(name, h, w)


def _needs_root(fmt: str) -> str:
    return (
        f"dataset {fmt!r} reads a converted store: set data.root=DIR (convert it first with "
        f"`probslot data convert SOURCE --format {fmt} --out DIR`; docs/data.md)"
    )


def store_dataset(
    fmt: str,
    root: str | os.PathLike[str] | None,
    split: str = "train",
    num_samples: int = -1,
    offset: int = 0,
    image_size: int | None = None,
    crop: str = "default",
    subset: str | None = None,
    object_range: Sequence[int] | None = None,
) -> StoreDataset:
    """A view of a converted store of format `fmt` (what the registered formats build)."""
    if root is None:
        raise ValueError(_needs_root(fmt))
    check_int("num_samples", num_samples, low=-1, hint="-1 = every remaining item")
    check_int("offset", offset, low=0)
    split_dir = _choose_split(root, split)
    manifest = read_manifest(split_dir)
    if manifest["format"] != fmt:
        raise ValueError(
            f"the store {str(split_dir)!r} was converted from {manifest['format']!r}, not {fmt!r}: "
            f"set data.name={manifest['format']}"
        )
    rng = _object_range(subset, object_range)
    files = _Files(split_dir, manifest)
    rows = np.arange(int(manifest["count"]))
    if rng is not None:
        nobj = files.whole("num_objects")
        rows = np.flatnonzero((nobj >= rng[0]) & (nobj <= rng[1]))
    available = len(rows) - offset
    if num_samples == -1:
        num_samples = max(available, 0)
    if offset + num_samples > len(rows):
        what = f" with {rng[0]}..{rng[1]} objects" if rng else ""
        raise ValueError(
            f"the store {str(split_dir)!r} holds {len(rows)} items{what}; items "
            f"{offset}..{offset + num_samples - 1} were asked for"
        )
    box = _resolve_crop(manifest, crop)
    size = None
    if image_size is not None:
        check_int("image_size", image_size, low=8)
        size = (image_size, image_size)
    return StoreDataset(
        split_dir,
        rows[offset : offset + num_samples],
        box=box,
        size=size,
        max_objects=rng[1] if rng is not None else None,
    )


def _register(fmt: str) -> Callable[..., StoreDataset]:
    def build(
        num_samples: int = -1,
        seed: int = 0,
        root: str | None = None,
        split: str = "train",
        offset: int = 0,
        image_size: int | None = None,
        crop: str = "default",
        subset: str | None = None,
        object_range: list[int] | None = None,
    ) -> StoreDataset:
        return store_dataset(
            fmt, root, split, num_samples, offset, image_size, crop, subset, object_range
        )

    build.__name__ = build.__qualname__ = f"{fmt.replace('-', '_')}_store"
    build.__doc__ = (
        f"The {fmt} data of a converted store (``probslot data convert SOURCE --format {fmt}``).\n\n"
        "`seed` is unused (the store's order is the source's); `crop` 'default' is the format's "
        "standard crop; `subset` a name in `SUBSETS`, `object_range` [fewest, most] objects."
    )
    build.reads_store = True  # type: ignore[attr-defined]
    DATASETS.register(fmt)(build)
    return build


STORE_FORMATS: tuple[str, ...] = tuple(READERS.available())
for _fmt in STORE_FORMATS:
    _register(_fmt)


def build_store_split(cfg: Any, split: str, *, uint8_transfer: bool = False) -> StoreDataset:
    """The train/val/test dataset of a `DataConfig` whose ``root`` is a store.

    A split the store holds (converted with ``--split val``, ...) is read from its own folder;
    the others are cut from the end of the store's ``train`` split, after the subset filter:
    test = its last ``num_test`` items, val = the ``num_val`` before them, train = the first
    ``num_train`` of the rest (``num_train = -1``: all of the rest). `uint8_transfer`: images
    and masks as the stored uint8 (see `StoreDataset`; `to_contract_dtypes` restores them).
    """
    check_bool("uint8_transfer", uint8_transfer)
    dataset = _store_split(cfg, split)
    return dataset.with_dtypes("uint8", "uint8") if uint8_transfer else dataset


def _store_split(cfg: Any, split: str) -> StoreDataset:
    if cfg.root is None:
        raise ValueError(_needs_root(cfg.name))
    splits = store_splits(cfg.root)
    opts = cfg.dataset_options()
    opts.pop("root", None)
    factory = DATASETS.get(cfg.name)
    sizes = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    if split in splits and split != "train":
        return factory(num_samples=sizes[split], root=cfg.root, split=split, **opts)
    if "train" not in splits:
        raise ValueError(
            f"store {cfg.root!r} has the splits {', '.join(splits)} but no {split!r} and no train "
            f"split to cut it from; convert one with --split {split}"
        )
    whole = factory(num_samples=-1, root=cfg.root, split="train", **opts)
    n = len(whole)
    carved = [s for s in ("val", "test") if s not in splits]
    tail = sum(sizes[s] for s in carved)
    if split == "test":
        offset, count = n - sizes["test"], sizes["test"]
    elif split == "val":
        offset = n - sizes["val"] - (sizes["test"] if "test" in carved else 0)
        count = sizes["val"]
    else:
        offset, count = 0, (n - tail if sizes["train"] == -1 else sizes["train"])
    if offset < 0 or count < 0 or (split == "train" and count > n - tail):
        raise ValueError(
            f"store {cfg.root!r} holds {n} train items (after the subset); data.num_val and "
            f"data.num_test take {tail} of them from its end ({', '.join(carved)}), which leaves "
            f"{n - tail} for training but data.num_train={sizes['train']}. Lower the sizes or set "
            "data.num_train=-1 (all the rest)"
        )
    return factory(num_samples=count, root=cfg.root, split="train", offset=offset, **opts)


def is_store_format(name: str) -> bool:
    """Whether the registered dataset `name` reads a converted store (needs ``data.root``)."""
    return name in DATASETS and getattr(DATASETS.get(name), "reads_store", False)


# =========================================================================== info
def store_info(root: str | os.PathLike[str]) -> str:
    """A text report of every split of a store: the manifest and the object-count statistics."""
    lines = []
    for name, split_dir in store_splits(root).items():
        m = read_manifest(split_dir)
        size = sum(f["bytes"] for s in m["shards"] for f in s["files"].values())
        src = m["sources"]
        if isinstance(src, dict):
            sources = f"{src['files']} files, {src['bytes'] / 1e6:.1f} MB (list in {src['list']})"
        else:
            sources = "; ".join(
                f"{r['path']} ({r['bytes'] / 1e6:.1f} MB, sha256 {r['sha256'][:16]}…)" for r in src
            )
        lines += [
            f"{split_dir}",
            f"  format        {m['format']} (reader v{m['reader_version']}, store layout v{m['probslot_store']})"
            + (f", variant {m['variant']}" if m.get("variant") else ""),
            f"  split         {name}: {m['count']} records in {len(m['shards'])} shards, {size / 1e6:.1f} MB",
            f"  image         {m['image_shape']} uint8, crop {m['crop']}, image size "
            f"{m['image_size'] or 'as the source'} (source {m['source_hw']}); default training "
            f"crop {m['default_crop']}",
            f"  masks         {'yes' if m['has_masks'] else 'no'}; {m['max_objects']} object rows, "
            f"latents: {', '.join(m['latent_names']) or '(none)'}",
            f"  source        {m['settings']['source']}",
            f"  source files  {sources}",
            f"  written       {m['created']} by probslot {m['probslot_version']} in "
            f"{m.get('conversion_seconds', '?')} s",
        ]
        for label, key in (("objects", "num_objects"), ("visible", "visible_objects")):
            hist = {int(k): v for k, v in m["statistics"][key].items()}
            total = sum(hist.values()) or 1
            mean = sum(k * v for k, v in hist.items()) / total
            lines.append(
                f"  {label:<13} per image: mean {mean:.2f}, range {min(hist)}..{max(hist)}"
            )
            for k in sorted(hist):
                bar = "#" * max(1, round(40 * hist[k] / total)) if hist[k] else ""
                lines.append(f"    {k:>3}  {hist[k]:>9}  {100 * hist[k] / total:5.1f} %  {bar}")
    return "\n".join(lines)
