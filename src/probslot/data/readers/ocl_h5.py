"""object-centric-library HDF5 files (Dittadi et al. 2022; read by the PSA authors' code).

One pair per dataset: ``{name}-full.hdf5`` and ``{name}-metadata.npy``. HDF5 datasets, first
axis N: ``image`` (N, H, W, 3) uint8; ``mask`` (N, H, W, 1) integer label map 0..E−1 (entity
labels, the first `num_background` of them background); ``visibility`` (N, E);
``num_actual_objects`` (N, 1); per-entity factors (N, E) or (N, E, d) (CLEVR ``x, y, z,
pixel_coords, rotation, size, shape, material, color``; Multi-dSprites ``x, y, scale, shape,
color``; ...). ``metadata.npy`` is a pickled dict: feature → {type: numerical | categorical |
dataset_property, ...}, ``"self.dataset"`` → {num_samples}.

Mapping to the contract: the object rows are the entities ≥ `num_background` with visibility
> 0, in order; latents are every numerical or categorical per-entity factor of the metadata, in
sorted name order, a (N, E, d) factor giving columns ``name_0 .. name_{d-1}``. Background
entities per dataset as in object-centric-library: 4 for Objects-Room, 1 otherwise. Note that
object-centric-library re-labels some Objects-Room masks at load time with a heuristic (when a
scene has fewer than four background entities); this reader keeps the file's labels.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from probslot.data.readers.base import READERS, DataFormatError, Reader, Record

__all__ = ["OCL_DATASETS", "OclH5Reader"]

#: dataset names of object-centric-library → background entities
OCL_DATASETS: dict[str, int] = {
    "clevr_10": 1,
    "clevrtex": 1,
    "multidsprites_colored_on_grayscale": 1,
    "objects_room_train": 4,
    "shapestacks": 1,
    "tetrominoes": 1,
}
#: the crop a config applies by default, per dataset (object-centric-library crops Tetrominoes)
_DEFAULT_CROPS = {"tetrominoes": "center-32"}
_NOT_LATENTS = {"image", "mask", "visibility", "num_actual_objects"}
_CHUNK = 256


@READERS.register("ocl-h5")
class OclH5Reader(Reader):
    """One ``{name}-full.hdf5`` + ``{name}-metadata.npy`` pair (variant = the dataset name)."""

    format = "ocl-h5"
    variants = tuple(OCL_DATASETS)

    def __post_init__(self) -> None:
        source = Path(self.source)
        if self.variant is None:
            files = [source] if source.is_file() else sorted(source.glob("*-full.hdf5"))
            names = [p.name.removesuffix("-full.hdf5") for p in files]
            known = [n for n in names if n in OCL_DATASETS]
            if source.is_file() and not known:
                raise ValueError(
                    f"{str(source)!r} is not one of the object-centric-library files "
                    f"({', '.join(f'{n}-full.hdf5' for n in OCL_DATASETS)}); pass --variant NAME"
                )
            if len(known) > 1:
                raise ValueError(
                    f"{str(source)!r} holds several datasets ({', '.join(known)}); pass --variant"
                )
            self.variant = known[0] if known else None
        super().__post_init__()
        name = self.variant
        self.path = source if source.is_file() else source / f"{name}-full.hdf5"
        self.meta_path = self.path.with_name(
            f"{name}-metadata.npy"
        )  # what the library's code reads
        if not self.meta_path.is_file() and self.path.with_name(f"{name}_metadata.npy").is_file():
            self.meta_path = self.path.with_name(f"{name}_metadata.npy")  # its README's spelling
        for path in (self.path, self.meta_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"ocl-h5 needs {path.name} next to {self.path.name}; {str(path)!r} does not exist"
                )
        self.num_background = OCL_DATASETS[name]
        self.default_crop = _DEFAULT_CROPS.get(name, "none")
        self.metadata = self._read_metadata()
        import h5py

        with h5py.File(self.path, "r") as f:
            for key in ("image", "mask", "visibility"):
                if key not in f:
                    raise DataFormatError(
                        self.path, f"no dataset {key!r}; it holds {', '.join(sorted(f))}"
                    )
            image, mask, vis = f["image"], f["mask"], f["visibility"]
            n = image.shape[0]
            if image.ndim != 4 or image.shape[3] not in (1, 3) or image.dtype != np.uint8:
                raise DataFormatError(
                    self.path,
                    f"'image' is {image.dtype} {image.shape}; expected uint8 (N, H, W, 3)",
                )
            h, w = image.shape[1:3]
            if mask.shape not in ((n, h, w, 1), (n, h, w)):
                raise DataFormatError(
                    self.path, f"'mask' has shape {mask.shape}; expected ({n}, {h}, {w}, 1)"
                )
            if vis.ndim != 2 or vis.shape[0] != n:
                raise DataFormatError(
                    self.path, f"'visibility' has shape {vis.shape}; expected ({n}, E)"
                )
            self.entities = vis.shape[1]
            self.count = n
            self.image_hw = (h, w)
            self.factors: list[tuple[str, int]] = []
            for key in sorted(f):
                entry = self.metadata.get(key, {})
                if key in _NOT_LATENTS or not isinstance(entry, dict):
                    continue
                if entry.get("type") not in ("numerical", "categorical"):
                    continue
                shape = f[key].shape
                if len(shape) < 2 or shape[:2] != (n, self.entities):
                    raise DataFormatError(
                        self.path,
                        f"factor {key!r} has shape {shape}; expected ({n}, {self.entities}[, d])",
                    )
                self.factors.append((key, int(np.prod(shape[2:], dtype=np.int64))))
        declared = self.metadata.get("self.dataset", {}).get("num_samples")
        if declared is not None and int(declared) != n:
            raise DataFormatError(
                self.meta_path,
                f"metadata says num_samples={declared} but {self.path.name} holds {n} images",
            )
        if n == 0:
            raise DataFormatError(self.path, "the file holds no images")
        self.max_objects = self.entities - self.num_background
        self.latent_names = tuple(
            key if width == 1 else f"{key}_{j}" for key, width in self.factors for j in range(width)
        )

    def _read_metadata(self) -> dict[str, Any]:
        try:
            meta = _load_metadata_npy(self.meta_path)
        except pickle.UnpicklingError as err:  # a global outside the allow-list: never run
            raise DataFormatError(self.meta_path, f"refused: {err}") from None
        except Exception as err:  # a truncated or foreign file: say which
            raise DataFormatError(self.meta_path, f"not a readable metadata .npy ({err})") from None
        if not isinstance(meta, dict):
            raise DataFormatError(
                self.meta_path, f"holds a {type(meta).__name__}; expected a pickled dict"
            )
        return meta

    def __len__(self) -> int:
        return self.count

    def source_files(self, count: int | None = None) -> list[Path]:
        return [self.path, self.meta_path]

    def info(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "num_background": self.num_background,
            "entities": self.entities,
            "default_crop": self.default_crop,
        }

    def records(self, start: int = 0) -> Iterator[Record]:
        import h5py

        with h5py.File(self.path, "r") as f:
            keys = ["image", "mask", "visibility", *(k for k, _ in self.factors)]
            for lo in range(start, self.count, _CHUNK):
                hi = min(lo + _CHUNK, self.count)
                chunk = {k: f[k][lo:hi] for k in keys}
                for j in range(hi - lo):
                    yield self._record(chunk, j, lo + j)

    def _record(self, chunk: dict[str, np.ndarray], j: int, index: int) -> Record:
        e, nbg = self.entities, self.num_background
        labels = chunk["mask"][j].reshape(self.image_hw)
        if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= e):
            raise DataFormatError(
                self.path,
                f"mask labels lie in [{int(labels.min())}, {int(labels.max())}]; expected 0..{e - 1}",
                index,
            )
        vis = chunk["visibility"][j].reshape(e)
        objects = [k for k in range(nbg, e) if vis[k] > 0]
        latents = np.zeros((self.max_objects, len(self.latent_names)), np.float32)
        if self.factors and objects:
            cols = [chunk[k][j].reshape(e, -1).astype(np.float32) for k, _ in self.factors]
            latents[: len(objects)] = np.concatenate(cols, axis=1)[objects]
        lut = np.zeros(e, np.uint8)
        lut[objects] = np.arange(1, len(objects) + 1)
        mask = lut[labels.astype(np.int64)]
        return self.make_record(
            chunk["image"][j], mask, latents, len(objects), f"{self.path}: record {index}"
        )


# --------------------------------------------------------------------------- metadata.npy
#: What object-centric-library's `{name}-metadata.npy` pickles: a dict of plain Python values and
#: NumPy arrays. Only these globals may be looked up while unpickling it, so a crafted file
#: cannot run code (a plain `np.load(allow_pickle=True)` would run anything).
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(
                f"the metadata pickle asks for {module}.{name}, which is not a plain value or "
                "NumPy array (only those are read, so that no code in the file can run)"
            )
        return super().find_class(module, name)


def _load_metadata_npy(path: Path) -> Any:
    """The object a `np.save(path, obj, allow_pickle=True)` file holds, unpickled with an
    allow-list of plain values and NumPy arrays (see `_SAFE_GLOBALS`)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise ValueError(f".npy format version {version} is not one this reader knows")
        shape, _, dtype = read_header(fh)
        if not dtype.hasobject:  # a plain array: no pickle at all
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        obj = _MetadataUnpickler(io.BytesIO(fh.read())).load()
    return obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
