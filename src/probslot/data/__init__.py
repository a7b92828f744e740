"""Built-in data: the paper's 2D toy data and procedural sprites, their contract and DataModule.

The item contract (`docs/data.md`) and `collate` live in `probslot.data.contract`; datasets are
registered in `DATASETS` by name (`sprites`, `toy2d`). `SlotDataModule` / `build_datamodule`
(Lightning) are imported lazily so the datasets stay usable without Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from probslot.data.contract import DATASETS, IMAGE_KEYS, check_image_item, collate
from probslot.data.sprites import LATENT_NAMES, SHAPES, SpritesDataset, render_sprites
from probslot.data.toy2d import TOY2D_CENTRES, Toy2DDataset

if TYPE_CHECKING:
    from probslot.data.datamodule import DataConfig, SlotDataModule, build_datamodule

__all__ = [
    "DATASETS",
    "IMAGE_KEYS",
    "LATENT_NAMES",
    "SHAPES",
    "TOY2D_CENTRES",
    "DataConfig",
    "SlotDataModule",
    "SpritesDataset",
    "Toy2DDataset",
    "build_datamodule",
    "check_image_item",
    "collate",
    "render_sprites",
]

_LAZY = {"DataConfig", "SlotDataModule", "build_datamodule"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from probslot.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module 'probslot.data' has no attribute {name!r}")
