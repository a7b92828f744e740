"""DataConfig validation, split datasets, SlotDataModule splits and batches, collate."""

from __future__ import annotations

import pytest
import torch

from probslot.data import DataConfig, build_split, collate, split_seed
from probslot.data.datamodule import SlotDataModule, build_datamodule


def _hashes(loader) -> set[bytes]:
    out = set()
    for batch in loader:
        for image in batch["image"]:
            out.add(image.numpy().tobytes())
    return out


def test_splits_are_disjoint_and_batches_follow_contract() -> None:
    cfg = DataConfig(
        num_train=13, num_val=7, num_test=5, image_size=16, max_objects=3, batch_size=4
    )
    dm = build_datamodule(cfg)
    assert isinstance(dm, SlotDataModule)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 16, 16) and batch["mask"].dtype == torch.int64
    assert batch["num_objects"].shape == (4,) and batch["num_objects"].dtype == torch.int64
    assert batch["latents"].shape == (4, 3, 6) and batch["latents"].dtype == torch.float32
    assert batch["visibility"].shape == (4, 3) and batch["visibility"].dtype == torch.bool
    train, val, test = (
        _hashes(dm.train_dataloader()),
        _hashes(dm.val_dataloader()),
        _hashes(dm.test_dataloader()),
    )
    assert (len(train), len(val), len(test)) == (13, 7, 5)
    assert not (train & val) and not (train & test) and not (val & test)
    # same config → same data
    dm2 = build_datamodule(cfg)
    assert _hashes(dm2.val_dataloader()) == val
    seeds = {split_seed(0, s) for s in ("train", "val", "test")} | {
        split_seed(1, s) for s in ("train", "val", "test")
    }
    assert len(seeds) == 6


def test_build_split_is_the_datamodule_split_without_lightning() -> None:
    cfg = DataConfig(num_train=3, num_val=2, num_test=5, image_size=16, max_objects=2)
    dm = build_datamodule(cfg)
    for split, size in (("train", 3), ("val", 2), ("test", 5)):
        plain = build_split(cfg, split)
        assert len(plain) == size == cfg.split_size(split)
        assert torch.equal(plain[size - 1]["image"], dm.build_split(split)[size - 1]["image"])
    with pytest.raises(
        ValueError, match=r"split must be one of .*; got 'tset'\. Did you mean 'test'"
    ):
        build_split(cfg, "tset")
    with pytest.raises(ValueError, match=r"Did you mean 'val'"):
        split_seed(0, "vla")


def test_loader_settings() -> None:
    dm = build_datamodule(DataConfig(num_train=6, image_size=16, batch_size=2, num_workers=2))
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers
    assert loader.pin_memory == torch.cuda.is_available()
    loader = build_datamodule(DataConfig(num_train=6, image_size=16, batch_size=2)).val_dataloader()
    assert loader.num_workers == 0 and not loader.persistent_workers


def test_toy2d_and_dataset_kwargs() -> None:
    cfg = DataConfig(
        name="toy2d",
        num_train=5,
        num_val=3,
        batch_size=5,
        dataset_kwargs={"split": "total", "points_per_item": 30},
    )
    batch = next(iter(build_datamodule(cfg).train_dataloader()))
    assert batch["points"].shape == (5, 30, 2) and batch["labels"].shape == (5, 30)
    cfg = DataConfig(
        num_train=3,
        image_size=16,
        batch_size=3,
        dataset_kwargs={"background": "gray", "shapes": ["circle"]},
    )
    batch = next(iter(build_datamodule(cfg).train_dataloader()))
    assert torch.all(batch["latents"][..., 5] == 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "sprite"}, r"unknown dataset 'sprite'\. Did you mean 'sprites'\?"),
        ({"num_train": 0}, r"DataConfig\.num_train must be an integer >= 1; got 0"),
        ({"num_val": -1}, r"DataConfig\.num_val must be an integer >= 0; got -1"),
        ({"image_size": 4}, r"DataConfig\.image_size must be an integer >= 8; got 4"),
        (
            {"min_objects": 5, "max_objects": 3},
            r"min_objects must be an integer >= 0 and <= 3; got 5",
        ),
        ({"batch_size": 0}, r"batch_size must be an integer >= 1"),
        ({"num_workers": -1}, r"num_workers must be an integer >= 0"),
        (
            {"dataset_kwargs": {"backgroud": "gray"}},
            r"no option 'backgroud'\. Did you mean 'background'\?",
        ),
        ({"dataset_kwargs": {"image_size": 32}}, r"must not set 'image_size'"),
        ({"dataset_kwargs": {"seed": 3}}, r"must not set 'seed'"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DataConfig(**kwargs)


def test_config_types() -> None:
    with pytest.raises(
        TypeError, match=r"DataConfig\.batch_size must be an integer >= 1; got 2\.5"
    ):
        DataConfig(batch_size=2.5)
    with pytest.raises(TypeError, match=r"DataConfig\.seed must be an integer >= 0; got True"):
        DataConfig(seed=True)
    with pytest.raises(TypeError, match="build_split needs a DataConfig"):
        build_split({"name": "sprites"}, "train")
    with pytest.raises(TypeError, match="needs a DataConfig"):
        SlotDataModule({"name": "sprites"})


def test_collate_errors() -> None:
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
    with pytest.raises(ValueError, match="same keys"):
        collate([{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
    with pytest.raises(TypeError, match="key 'a' holds str"):
        collate([{"a": "x"}])
    out = collate([{"a": 1, "b": 0.5, "c": True}, {"a": 2, "b": 1.5, "c": False}])
    assert (
        out["a"].dtype == torch.int64
        and out["b"].dtype == torch.float32
        and out["c"].dtype == torch.bool
    )


@pytest.mark.slow
def test_worker_loading_matches_main_process() -> None:
    """Two worker processes (persistent) deliver exactly the batches the main process renders."""
    base = dict(num_train=12, num_val=6, image_size=16, max_objects=3, batch_size=3)
    main = build_datamodule(DataConfig(**base))
    workers = build_datamodule(DataConfig(**base, num_workers=2))
    for a, b in zip(main.val_dataloader(), workers.val_dataloader()):
        for key in a:
            assert torch.equal(a[key], b[key])
    seen = sum(len(batch["image"]) for batch in workers.train_dataloader())
    assert seen == 12
