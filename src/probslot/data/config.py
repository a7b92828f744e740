"""`DataConfig` (what data a run uses), the split seeds and the dataset of one split.

No Lightning here: :func:`probslot.load_model`, evaluation and the posterior commands read a run's
data config and build its splits without training code. The Lightning ``SlotDataModule`` over
these splits lives in `probslot.data.datamodule`.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from probslot.data.contract import DATASETS
from probslot.registry import did_you_mean
from probslot.validation import check_bool, check_choice, check_int

__all__ = ["SPLITS", "DataConfig", "Split", "build_split", "split_seed"]

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# DataConfig fields forwarded to a dataset when its constructor takes them
_SHARED = ("image_size", "min_objects", "max_objects")
# where the constructor arguments a config cannot set in dataset_kwargs come from
_SOURCE_OF = {
    "num_samples": "it comes from the DataConfig fields num_train/num_val/num_test",
    "split": "build_split chooses it for each of train/val/test",
    "offset": "build_split chooses it for each of train/val/test",
}


def split_seed(seed: int, split: Split) -> int:
    """The dataset seed of `split` for a run seeded `seed` (distinct for every (seed, split))."""
    check_choice("split", split, SPLITS)
    state = np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])  # 64-bit, non-negative


@dataclass(frozen=True)
class DataConfig:
    """What data to train on: a registered dataset, split sizes, loader settings.

    Attributes:
        name: a dataset in `probslot.data.DATASETS` (``sprites``, ``toy2d``).
        num_train, num_val, num_test: split sizes (train >= 1, val/test >= 0).
        image_size, min_objects, max_objects: forwarded to datasets that take them.
        batch_size: >= 1.
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: run seed; each split uses `split_seed(seed, split)`.
        dataset_kwargs: further constructor options of the dataset (checked against its signature).
        root: a converted store (``probslot data convert ... --out DIR``) for the formats that read
            one (``clevr-with-masks``, ``objects-room``, ...; `name` is the store's format). Then
            ``num_train = -1`` means every item the store has left after val and test, which are
            cut from the end of its train split unless it holds them (docs/data.md).
        feature_cache: a feature cache (``probslot features extract ... --out DIR``): items get
            the frozen encoder's tokens as ``features`` and a feature model skips its encoder.
            It must match the model's encoder and this config's data (docs/real-images.md).
    """

    name: str = "sprites"
    num_train: int = 10_000
    num_val: int = 500
    num_test: int = 500
    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    batch_size: int = 64
    num_workers: int = 0
    seed: int = 0
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    root: str | None = None
    feature_cache: str | None = None

    def __post_init__(self) -> None:
        DATASETS.get(self.name)  # unknown name → ValueError with "did you mean"
        reads_store = self._check_root()
        for name, low in (
            ("num_train", -1 if reads_store else 1),
            ("num_val", 0),
            ("num_test", 0),
            ("image_size", 8),
            ("max_objects", 1),
            ("batch_size", 1),
            ("num_workers", 0),
            ("seed", 0),
        ):
            check_int(f"DataConfig.{name}", getattr(self, name), low=low)
        check_int(
            "DataConfig.min_objects",
            self.min_objects,
            low=0,
            high=self.max_objects,
            hint=f"min_objects must not exceed max_objects={self.max_objects}",
        )
        if not isinstance(self.dataset_kwargs, dict):
            raise TypeError(
                f"DataConfig.dataset_kwargs must be a dict; got {type(self.dataset_kwargs).__name__}"
            )
        params = self._parameters()
        reserved = {"num_samples", "seed", *(k for k in _SHARED if k in params)}
        # readers of published splits (voc, coco) get the split from build_split
        splits = {"split"} if getattr(DATASETS.get(self.name), "takes_split", False) else set()
        reserved |= (
            {"root", "split", "offset"} if reads_store else ({"root"} & set(params)) | splits
        )
        for key in self.dataset_kwargs:
            if key in reserved:
                raise ValueError(
                    f"dataset_kwargs must not set {key!r}; "
                    + _SOURCE_OF.get(key, f"it comes from the DataConfig field {key}")
                )
            if key not in params:
                options = sorted(set(params) - reserved)
                dym = did_you_mean(key, options)
                raise ValueError(
                    f"dataset {self.name!r} has no option {key!r}.{dym} Options: {', '.join(options)}"
                )

    def _check_root(self) -> bool:
        """Validate `root`; True when `name` is a format that reads a converted store."""
        reads_store = bool(getattr(DATASETS.get(self.name), "reads_store", False))
        if self.root is None:
            return reads_store
        if not isinstance(self.root, str) or not self.root:
            raise TypeError(f"DataConfig.root must be a non-empty path string; got {self.root!r}")
        if "root" not in self._parameters():
            readers = [
                n
                for n in DATASETS.available()
                if "root" in inspect.signature(DATASETS.get(n)).parameters
            ]
            raise ValueError(
                f"data.root is set but dataset {self.name!r} reads no files; set data.name to the "
                f"store's format ({', '.join(readers)})"
            )
        if reads_store:
            defaults = {
                f.name: f.default for f in fields(self) if f.name in ("min_objects", "max_objects")
            }
            for key, default in defaults.items():
                if getattr(self, key) != default:
                    raise ValueError(
                        f"data.{key} does not filter a store; choose scenes by their object count "
                        "with data.dataset_kwargs.subset (e.g. clevr6) or "
                        "data.dataset_kwargs.object_range=[fewest, most]"
                    )
        return reads_store

    def _parameters(self) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(DATASETS.get(self.name))
        return {k: p for k, p in sig.parameters.items() if k != "self"}

    def dataset_options(self) -> dict[str, Any]:
        """Constructor keyword arguments (without num_samples and seed) for this config's dataset."""
        params = self._parameters()
        opts = {k: getattr(self, k) for k in _SHARED if k in params}
        if self.root is not None and "root" in params:
            opts["root"] = self.root
        opts.update(self.dataset_kwargs)
        return opts

    def split_size(self, split: Split) -> int:
        """The number of items in `split` (``num_train``, ``num_val`` or ``num_test``)."""
        check_choice("split", split, SPLITS)
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_description(cfg: DataConfig, split: Split) -> dict[str, Any]:
    """What decides the items of `split` (for feature caches): the config without its loader
    and cache settings, the split, its size and seed."""
    loader = {"batch_size", "num_workers", "feature_cache"}
    sizes = {"num_train", "num_val", "num_test", "seed"}  # replaced by this split's own
    data = {k: v for k, v in cfg.to_dict().items() if k not in loader | sizes}
    return data | {"split": split, "num_samples": cfg.split_size(split), "seed": cfg.seed}


def build_split(cfg: DataConfig, split: Split, *, uint8_transfer: bool = False) -> Dataset:
    """The dataset of one split of `cfg`, exactly as training sees it (seeded by `split_seed`).

    `uint8_transfer`: a dataset that holds uint8 images and masks (a converted store) returns
    them as uint8 instead of the contract's float32 and int64, for loader workers to hand over
    cheaply; `probslot.data.store.to_contract_dtypes` turns a batch of them into the contract's
    values (the training DataModule does, on the device). Datasets that render float images
    (sprites, ...) return their usual items.
    """
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"build_split needs a DataConfig; got {type(cfg).__name__}")
    check_bool("uint8_transfer", uint8_transfer)
    if cfg.feature_cache is not None:  # the items, plus their cached encoder tokens
        from dataclasses import replace

        from probslot.data.features import CachedFeatures

        items = build_split(replace(cfg, feature_cache=None), split, uint8_transfer=uint8_transfer)
        return CachedFeatures(items, cfg.feature_cache, split, split_description(cfg, split))
    if getattr(DATASETS.get(cfg.name), "reads_store", False):
        from probslot.data.store import build_store_split

        return build_store_split(cfg, split, uint8_transfer=uint8_transfer)
    takes_split = getattr(DATASETS.get(cfg.name), "takes_split", False)  # voc, coco
    readers_split = {"split": split} if takes_split else {}
    return DATASETS.build(
        cfg.name,
        num_samples=cfg.split_size(split),
        seed=split_seed(cfg.seed, split),
        **readers_split,
        **cfg.dataset_options(),
    )
