"""The Lightning `SlotDataModule` over the splits of a `DataConfig`.

The only module in `probslot.data` that imports Lightning (import it from here:
`probslot.data` itself stays Lightning-free). Splits are the same dataset class with different
seeds, derived from (seed, split) so train, val and test never share a scene; `DataConfig`,
`split_seed` and `build_split` live in `probslot.data.config`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from probslot.data.config import DataConfig, Split, build_split
from probslot.data.contract import collate

__all__ = ["SlotDataModule", "build_datamodule"]


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
            self.datasets[split] = build_split(self.cfg, split)
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
