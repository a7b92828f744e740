"""Built-in data: the paper's 2D toy data and procedural sprites, their contract and configs.

The item contract (`docs/data.md`) and `collate` live in `probslot.data.contract`; datasets are
registered in `DATASETS` by name (`sprites`, `toy2d`, and the store formats: `clevr-with-masks`,
`objects-room`, ... read a store that `convert` wrote from the published files with the
TensorFlow-free readers of `probslot.data.readers`; `open_store`, `probslot.data.store`);
`DataConfig`, `split_seed` and
`build_split` (the dataset of one split, as training sees it) in `probslot.data.config`.
Nothing here imports Lightning: the Lightning `SlotDataModule` / `build_datamodule` are imported
from `probslot.data.datamodule`.
"""

from __future__ import annotations

from probslot.data.coco import COCODataset  # registers "coco"
from probslot.data.config import SPLITS, DataConfig, build_split, split_seed
from probslot.data.contract import DATASETS, IMAGE_KEYS, check_image_item, collate
from probslot.data.sprites import LATENT_NAMES, SHAPES, SpritesDataset, render_sprites
from probslot.data.store import SUBSETS, StoreDataset, convert, open_store, store_info
from probslot.data.toy2d import TOY2D_CENTRES, Toy2DDataset
from probslot.data.voc import VOC_CLASSES, VOCDataset  # registers "voc"

__all__ = [
    "DATASETS",
    "IMAGE_KEYS",
    "LATENT_NAMES",
    "SHAPES",
    "SPLITS",
    "SUBSETS",
    "TOY2D_CENTRES",
    "COCODataset",
    "DataConfig",
    "SpritesDataset",
    "StoreDataset",
    "Toy2DDataset",
    "VOCDataset",
    "VOC_CLASSES",
    "build_split",
    "check_image_item",
    "collate",
    "convert",
    "open_store",
    "render_sprites",
    "split_seed",
    "store_info",
]
