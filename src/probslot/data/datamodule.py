"""`DataConfig` and the Lightning `SlotDataModule` over the registered datasets.

The only module in `probslot.data` that imports Lightning. Splits are the same dataset class
with different seeds, derived from (seed, split) so train, val and test never share a scene.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from probslot.data.contract import DATASETS, collate
from probslot.registry import did_you_mean

__all__ = ["SPLITS", "DataConfig", "SlotDataModule", "build_datamodule", "split_seed"]

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

# DataConfig fields forwarded to a dataset when its constructor takes them
_SHARED = ("image_size", "min_objects", "max_objects")


def split_seed(seed: int, split: Split) -> int:
    """The dataset seed of `split` for a run seeded `seed` (distinct for every (seed, split))."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    state = np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])  # 64-bit, non-negative


def _int_field(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"DataConfig.{name} must be an int; got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"DataConfig.{name} must be {allowed}; got {value}")


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

    def __post_init__(self) -> None:
        DATASETS.get(self.name)  # unknown name → ValueError with "did you mean"
        _int_field("num_train", self.num_train, 1)
        _int_field("num_val", self.num_val, 0)
        _int_field("num_test", self.num_test, 0)
        _int_field("image_size", self.image_size, 8)
        _int_field("max_objects", self.max_objects, 1)
        _int_field("min_objects", self.min_objects, 0, self.max_objects)
        _int_field("batch_size", self.batch_size, 1)
        _int_field("num_workers", self.num_workers, 0)
        _int_field("seed", self.seed, 0)
        if not isinstance(self.dataset_kwargs, dict):
            raise TypeError(
                f"DataConfig.dataset_kwargs must be a dict; got {type(self.dataset_kwargs).__name__}"
            )
        params = self._parameters()
        reserved = {"num_samples", "seed", *(k for k in _SHARED if k in params)}
        for key in self.dataset_kwargs:
            if key in reserved:
                raise ValueError(
                    f"dataset_kwargs must not set {key!r}; it comes from the DataConfig field "
                    f"{'num_train/num_val/num_test' if key == 'num_samples' else key}"
                )
            if key not in params:
                options = sorted(set(params) - reserved)
                dym = did_you_mean(key, options)
                raise ValueError(
                    f"dataset {self.name!r} has no option {key!r}.{dym} Options: {', '.join(options)}"
                )

    def _parameters(self) -> dict[str, inspect.Parameter]:
        sig = inspect.signature(DATASETS.get(self.name))
        return {k: p for k, p in sig.parameters.items() if k != "self"}

    def dataset_options(self) -> dict[str, Any]:
        """Constructor keyword arguments (without num_samples and seed) for this config's dataset."""
        params = self._parameters()
        opts = {k: getattr(self, k) for k in _SHARED if k in params}
        opts.update(self.dataset_kwargs)
        return opts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SlotDataModule(L.LightningDataModule):
    """Train/val/test loaders over one registered dataset; batches are `collate`d dicts.

    Uses `pin_memory` when CUDA is available and persistent workers when ``num_workers > 0``.
    The train loader shuffles with a generator seeded from ``cfg.seed``.
    """

    def __init__(self, cfg: DataConfig) -> None:
        super().__init__()
        if not isinstance(cfg, DataConfig):
            raise TypeError(f"SlotDataModule needs a DataConfig; got {type(cfg).__name__}")
        self.cfg = cfg
        self.datasets: dict[str, Dataset] = {}

    def build_split(self, split: Split) -> Dataset:
        """The dataset of one split (built on first use, then reused)."""
        if split not in self.datasets:
            sizes = {
                "train": self.cfg.num_train,
                "val": self.cfg.num_val,
                "test": self.cfg.num_test,
            }
            self.datasets[split] = DATASETS.build(
                self.cfg.name,
                num_samples=sizes[split],
                seed=split_seed(self.cfg.seed, split),
                **self.cfg.dataset_options(),
            )
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.build_split("train")
            self.build_split("val")
        if stage in (None, "validate"):
            self.build_split("val")
        if stage in (None, "test"):
            self.build_split("test")

    def _loader(self, split: Split, shuffle: bool) -> DataLoader:
        workers = self.cfg.num_workers
        generator = torch.Generator().manual_seed(self.cfg.seed) if shuffle else None
        return DataLoader(
            self.build_split(split),
            batch_size=self.cfg.batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
            generator=generator,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def build_datamodule(cfg: DataConfig) -> SlotDataModule:
    """The DataModule for `cfg` (datasets are built lazily in `setup` / the loaders)."""
    return SlotDataModule(cfg)
