"""The Lightning `SlotDataModule` over the splits of a `DataConfig`.

The only module in `probslot.data` that imports Lightning (import it from here:
`probslot.data` itself stays Lightning-free). Splits are the same dataset class with different
seeds, derived from (seed, split) so train, val and test never share a scene; `DataConfig`,
`split_seed` and `build_split` live in `probslot.data.config`.

Converted stores are loaded with uint8 images and masks (``build_split(..., uint8_transfer=True)``:
4× and 8× fewer bytes for loader workers to hand over than the contract's float32 and int64),
and `SlotDataModule.on_after_batch_transfer` restores the contract's values on the device, for
training, validation and test batches alike, before the LightningModule sees them.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from probslot.data.config import DataConfig, Split, build_split
from probslot.data.contract import collate
from probslot.data.store import to_contract_dtypes
from probslot.validation import check_bool

__all__ = ["SlotDataModule", "build_datamodule"]


class SlotDataModule(L.LightningDataModule):
    """Train/val/test loaders over one registered dataset; batches are `collate`d dicts.

    Uses `pin_memory` when CUDA is available and persistent workers when ``num_workers > 0``.
    The train loader shuffles with a generator seeded from ``cfg.seed``.

    With `uint8_transfer` (the default) the splits of a converted store yield uint8 images and
    masks (see `build_split`), so the loaders' batches do too; inside a Lightning trainer,
    `on_after_batch_transfer` turns them into the contract's float32 images in [0, 1] and int64
    masks on the device, exactly the values of ``uint8_transfer=False``. Code that iterates the
    loaders itself calls `probslot.data.store.to_contract_dtypes` on each batch.
    """

    def __init__(self, cfg: DataConfig, *, uint8_transfer: bool = True) -> None:
        super().__init__()
        if not isinstance(cfg, DataConfig):
            raise TypeError(f"SlotDataModule needs a DataConfig; got {type(cfg).__name__}")
        self.cfg = cfg
        self.uint8_transfer = check_bool("uint8_transfer", uint8_transfer)
        self.datasets: dict[str, Dataset] = {}

    def build_split(self, split: Split) -> Dataset:
        """The dataset of one split (built on first use, then reused)."""
        if split not in self.datasets:
            self.datasets[split] = build_split(self.cfg, split, uint8_transfer=self.uint8_transfer)
        return self.datasets[split]

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # uint8 images and masks → float32 / 255 and int64, on the device (to_contract_dtypes)
        return to_contract_dtypes(batch)

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


def build_datamodule(cfg: DataConfig, *, uint8_transfer: bool = True) -> SlotDataModule:
    """The DataModule for `cfg` (datasets are built lazily in `setup` / the loaders)."""
    return SlotDataModule(cfg, uint8_transfer=uint8_transfer)
