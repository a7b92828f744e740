"""Feature caches: a frozen encoder's tokens of a dataset split, computed once, read every step.

Training on frozen features (DINOSAUR, the paper's Table 3) spends most of each step in the ViT;
its output never changes, so ``probslot features extract`` runs it once per split and training
reads the tokens instead (``data.feature_cache: DIR``; items then carry ``features``).

**Layout**::

    DIR/manifest.json         written last, atomically: the encoder spec, dtype, and per split
                              its data description, count, token shape and chunk files
    DIR/{split}/{i:05d}.npy   float16 (c, n, D) tokens of items [i·C, i·C + c), C = chunk_size

The **encoder spec** (`probslot.models.FeatureAutoencoder.feature_spec`: encoder name,
architecture, sha256 of the weights file, block, final norm, image and input size, grid, D) and
the **data description** of each split (the data config's fields that decide its items, the
split, its size and seed) are recorded; a cache is used only when both match (`check_cache`,
`CachedFeatures`), and refused with a one-line error naming what differs otherwise.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from probslot.atomic import atomic_path, atomic_write_text
from probslot.data.contract import collate
from probslot.validation import check_int

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CachedFeatures",
    "FeatureCache",
    "check_cache",
    "check_feature_cache",
    "describe_spec",
    "extract_features",
    "spec_differences",
]

CACHE_FORMAT = "probslot-features"
CACHE_VERSION = 1
MANIFEST = "manifest.json"


def describe_spec(spec: Mapping[str, Any]) -> str:
    """``dino-vits16, block 12, 224×224 images, weights sha256 1a2b3c4d5e6f`` for messages."""
    size = "×".join(str(s) for s in spec.get("image_size", ()))
    sha = str(spec.get("weights_sha256", "?"))
    sha = sha.split(":")[-1][:12] + (" (random weights)" if sha.startswith("params:") else "")
    norm = ", final norm" if spec.get("norm") else ""
    return f"{spec.get('encoder')}, block {spec.get('layer')}{norm}, {size} images, weights sha256 {sha}"


def spec_differences(cached: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two specs (or descriptions), sorted."""
    return sorted(k for k in set(cached) | set(wanted) if cached.get(k) != wanted.get(k))


class FeatureCache:
    """An opened feature cache directory (read-only): manifest, splits, per-item tokens.

    ``tokens(split, index)`` → float16 (n, D) tensor; chunks are memory-mapped on first use.

    Raises:
        FileNotFoundError: no ``manifest.json`` in `root` (names `probslot features extract`).
        ValueError: the manifest is not a probslot feature cache, or of a newer version.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        path = self.root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"no feature cache at {str(self.root)!r} (no {MANIFEST}); write one with "
                "`probslot features extract --config CONFIG --out DIR`"
            )
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != CACHE_FORMAT:
            raise ValueError(
                f"{path} is not a probslot feature cache (format {manifest.get('format')!r})"
            )
        if int(manifest.get("version", 0)) > CACHE_VERSION:
            raise ValueError(
                f"{path} was written by a newer probslot (cache version {manifest['version']} > "
                f"{CACHE_VERSION}); upgrade probslot or extract the features again"
            )
        self.manifest: dict[str, Any] = manifest
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    @property
    def spec(self) -> dict[str, Any]:
        """The encoder spec the tokens were computed with."""
        return self.manifest["encoder"]

    @property
    def splits(self) -> list[str]:
        return sorted(self.manifest["splits"])

    def split(self, split: str) -> dict[str, Any]:
        """The manifest entry of `split` (data, count, shape, chunks)."""
        if split not in self.manifest["splits"]:
            raise ValueError(
                f"feature cache {str(self.root)!r} holds the splits {', '.join(self.splits)} but "
                f"not {split!r}; extract it with `probslot features extract ... --splits {split}`"
            )
        return self.manifest["splits"][split]

    def count(self, split: str) -> int:
        return int(self.split(split)["count"])

    def tokens(self, split: str, index: int) -> torch.Tensor:
        """float16 (n, D) tokens of item `index` of `split` (a copy, safe to keep)."""
        entry = self.split(split)
        size = int(self.manifest["chunk_size"])
        if not 0 <= index < int(entry["count"]):
            raise IndexError(
                f"index {index} out of range for {entry['count']} cached {split} items"
            )
        chunk = index // size
        key = (split, chunk)
        if key not in self._maps:
            self._maps[key] = np.load(self.root / entry["chunks"][chunk]["file"], mmap_mode="r")
        return torch.from_numpy(np.array(self._maps[key][index % size]))

    def verify(self) -> None:
        """Check every chunk file's sha256 against the manifest (ValueError naming the file)."""
        for name in self.splits:
            for chunk in self.split(name)["chunks"]:
                path = self.root / chunk["file"]
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != chunk["sha256"]:
                    raise ValueError(f"{path}: sha256 {digest[:12]} does not match the manifest")


def check_cache(cache: FeatureCache, spec: Mapping[str, Any]) -> None:
    """Raise a one-line ValueError unless `cache` holds tokens of the encoder `spec` describes."""
    differ = spec_differences(cache.spec, spec)
    if differ:
        raise ValueError(
            f"feature cache {str(cache.root)!r} holds tokens of {describe_spec(cache.spec)}, but "
            f"the model's encoder is {describe_spec(spec)} (they differ in {', '.join(differ)}); "
            "extract the features again with `probslot features extract` for this config, or "
            "unset data.feature_cache"
        )


class CachedFeatures(Dataset):
    """`dataset` with each item's cached tokens added as ``features`` (float16 (n, D)).

    The cache's description of `split` must equal `data` (the items must be the ones the tokens
    were computed from) and hold as many items as `dataset`.
    """

    def __init__(
        self,
        dataset: Dataset,
        cache: FeatureCache | str | Path,
        split: str,
        data: Mapping[str, Any],
    ) -> None:
        self.dataset = dataset
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.split = split
        entry = self.cache.split(split)
        differ = spec_differences(entry["data"], data)
        if differ:
            shown = ", ".join(
                f"{k}={entry['data'].get(k)!r} (cache) vs {data.get(k)!r}" for k in differ[:3]
            )
            raise ValueError(
                f"feature cache {str(self.cache.root)!r} was extracted from other {split} data: "
                f"{shown}; extract it again for this config or unset data.feature_cache"
            )
        if int(entry["count"]) != len(dataset):  # type: ignore[arg-type]
            raise ValueError(
                f"feature cache {str(self.cache.root)!r} holds {entry['count']} {split} items but "
                f"the dataset has {len(dataset)}; extract it again"  # type: ignore[arg-type]
            )

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["features"] = self.cache.tokens(self.split, index)
        return item


def _write_chunk(root: Path, name: str, rows: list[np.ndarray]) -> dict[str, Any]:
    """Write the rows (1, n, D) as one float16 array ``root/name`` atomically; its manifest entry."""
    block = np.concatenate(rows, axis=0)
    with atomic_path(root / name) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, block)
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    return {"file": name, "count": int(block.shape[0]), "sha256": digest}


def extract_features(
    model: Any,
    datasets: Mapping[str, tuple[Dataset, Mapping[str, Any]]],
    out: str | Path,
    *,
    batch_size: int = 32,
    chunk_size: int = 256,
    device: str = "cpu",
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Run `model`'s frozen encoder once over each split and write a feature cache to `out`.

    Args:
        model: a `probslot.models.FeatureAutoencoder` (its ``encoder`` and ``feature_spec()``).
        datasets: split name → (dataset of image items, its data description).
        out: the cache directory. Splits already there are kept when the encoder spec matches
            (others are replaced); a cache of another encoder is refused.
        batch_size, chunk_size: images per encoder call, items per chunk file.
        device: where the encoder runs (``cpu``, ``cuda``).
        progress: called as ``progress(split, done, total)`` after each batch.

    Returns:
        The cache directory.
    """
    check_int("batch_size", batch_size, low=1)
    check_int("chunk_size", chunk_size, low=1)
    root = Path(out).expanduser()
    spec = model.feature_spec()
    manifest: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "encoder": spec,
        "dtype": "float16",
        "chunk_size": chunk_size,
        "splits": {},
    }
    if (root / MANIFEST).is_file():
        old = FeatureCache(root)
        check_cache(old, spec)
        if int(old.manifest["chunk_size"]) == chunk_size:
            manifest["splits"] = dict(old.manifest["splits"])
    encoder = model.encoder.to(device).eval()
    for split, (dataset, data) in datasets.items():
        if not getattr(dataset, "deterministic", True):
            raise ValueError(
                f"the {split} dataset draws random augmentations, so one cached view per image "
                "would not be what training sees; turn the augmentation off to cache it"
            )
        total = len(dataset)  # type: ignore[arg-type]
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
        chunks: list[dict[str, Any]] = []
        buffer: list[np.ndarray] = []
        done, shape = 0, None

        with torch.no_grad():
            for batch in loader:
                images = model.check_images(batch["image"]).to(device)
                tokens = encoder(model.to_internal(images)).tokens  # (b, n, D)
                array = tokens.to(torch.float16).cpu().numpy()
                shape = array.shape[1:]
                for row in array:  # fill chunks of exactly chunk_size items
                    buffer.append(row[None])
                    if len(buffer) == chunk_size:
                        chunks.append(_write_chunk(root, f"{split}/{len(chunks):05d}.npy", buffer))
                        buffer = []
                done += array.shape[0]
                if progress is not None:
                    progress(split, done, total)
        if buffer:
            chunks.append(_write_chunk(root, f"{split}/{len(chunks):05d}.npy", buffer))
        manifest["splits"][split] = {
            "data": dict(data),
            "count": done,
            "shape": [done, *(shape or ())],
            "chunks": chunks,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return root


def check_feature_cache(path: str | Path, model: Any) -> FeatureCache:
    """The cache at `path`, after checking that `model` (a feature model) can train from it."""
    spec = getattr(model, "feature_spec", None)
    if spec is None:
        raise ValueError(
            "data.feature_cache holds a frozen encoder's tokens, which only a model with "
            f"target: features reads; got a {type(model).__name__}. Unset data.feature_cache"
        )
    cache = FeatureCache(path)
    check_cache(cache, spec())
    return cache
