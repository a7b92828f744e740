"""uint8 transfer: a store's items with uint8 images and masks, restored by `to_contract_dtypes`
to exactly the float32 / int64 values of the default loading path (CPU and, where present, CUDA);
`build_split(..., uint8_transfer=True)` and the DataModule, whose `on_after_batch_transfer`
hands the LightningModule the contract's batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from format_fixtures import write_deepmind
from probslot.data import DataConfig, build_split, collate, convert, open_store
from probslot.data.datamodule import build_datamodule
from probslot.data.store import StoreDataset, to_contract_dtypes
from probslot.data.transforms import crop_box


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CLEVR-with-masks store as converted (240×320) and one of Objects-Room (64×64)."""
    tmp = tmp_path_factory.mktemp("uint8_stores")
    out = {}
    for fmt, n in (("clevr-with-masks", 5), ("objects-room", 11)):
        path, _ = write_deepmind(tmp / "src" / fmt, fmt, n, seed=5, hidden_object=True)
        convert(path, fmt, tmp / fmt, progress=False)
        out[fmt] = tmp / fmt
    return out


def _views(stores: dict[str, Path]) -> dict[str, StoreDataset]:
    clevr, room = open_store(stores["clevr-with-masks"]), open_store(stores["objects-room"])
    box = crop_box("slot-attention", 240, 320)
    few = np.flatnonzero(room.raw("num_objects", np.arange(len(room))) <= 3)[::-1]
    assert len(few) >= 2
    return {
        "as stored": room,
        "resized": StoreDataset(room.path, size=(24, 24)),
        "cropped": StoreDataset(clevr.path, box=box),
        "cropped and resized": StoreDataset(clevr.path, [4, 0, 2], box=box, size=(40, 40)),
        "fewer object rows": StoreDataset(room.path, few, max_objects=3),
    }


@pytest.mark.parametrize(
    "view", ["as stored", "resized", "cropped", "cropped and resized", "fewer object rows"]
)
def test_uint8_items_are_the_float_items_bytes(stores: dict[str, Path], view: str) -> None:
    floats = _views(stores)[view]
    small = floats.with_dtypes("uint8", "uint8")
    assert (floats.image_dtype, floats.mask_dtype) == ("float32", "int64")  # a view, not a change
    positions = list(range(len(floats)))[::-1]
    want, got = floats.__getitems__(positions), small.__getitems__(positions)
    for a, b in zip(want, got):
        assert b["image"].dtype == torch.uint8 and b["image"].shape == a["image"].shape
        assert b["image"].is_contiguous() and a["image"].is_contiguous()
        assert torch.equal(b["image"].float() / 255, a["image"])  # bit for bit
        assert b["mask"].dtype == torch.uint8 and torch.equal(b["mask"].long(), a["mask"])
        for key in ("num_objects", "latents", "visibility"):
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key
    restored = to_contract_dtypes(collate(got))
    for key, value in collate(want).items():
        assert restored[key].dtype == value.dtype and torch.equal(restored[key], value), key


def test_only_the_mask_or_only_the_image_as_uint8(stores: dict[str, Path]) -> None:
    ds = open_store(stores["objects-room"])
    want = collate(ds.__getitems__([3, 1]))
    mask_only = collate(ds.with_dtypes("float32", "uint8").__getitems__([3, 1]))
    image_only = collate(ds.with_dtypes("uint8", "int64").__getitems__([3, 1]))
    assert mask_only["image"].dtype == torch.float32 and mask_only["mask"].dtype == torch.uint8
    assert image_only["image"].dtype == torch.uint8 and image_only["mask"].dtype == torch.int64
    for batch in (mask_only, image_only):
        restored = to_contract_dtypes(batch)
        assert all(torch.equal(restored[k], want[k]) for k in want)


def test_a_store_without_masks_gives_uint8_zero_masks(tmp_path: Path) -> None:
    from format_fixtures import write_image_folder

    root, _ = write_image_folder(tmp_path / "pics", [(24, 24)] * 3)
    convert(root, "image-folder", tmp_path / "s", progress=False)
    ds = open_store(tmp_path / "s").with_dtypes("uint8", "uint8")
    item = ds[2]
    assert item["mask"].dtype == torch.uint8 and int(item["mask"].sum()) == 0
    assert torch.equal(item["image"].float() / 255, open_store(tmp_path / "s")[2]["image"])


def test_every_byte_value_converts_exactly() -> None:
    """All 256 values against the float32 path's division; a multiplication by the float32
    reciprocal, which CUDA uses for a division by a Python number, would miss half of them."""
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(2, 3, 16, 16)
    want = torch.div(values, 255.0, out=torch.empty(2, 3, 16, 16))
    got = to_contract_dtypes({"image": values})["image"]
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert float(got.min()) == 0.0 and float(got.max()) == 1.0
    reciprocal = values.float() * torch.tensor(1 / 255, dtype=torch.float32)
    assert not torch.equal(reciprocal, want)  # why the divisor is a tensor


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_byte_value_converts_exactly_on_cuda() -> None:
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    want = torch.div(values, 255.0, out=torch.empty(1, 1, 16, 16))
    batch = {"image": values.cuda(), "mask": values[:, 0].cuda()}
    got = to_contract_dtypes(batch)
    assert got["image"].device.type == "cuda" and torch.equal(got["image"].cpu(), want)
    assert got["mask"].dtype == torch.int64 and torch.equal(got["mask"].cpu(), values[:, 0].long())


def test_contract_batches_pass_through_unchanged() -> None:
    batch = {"image": torch.rand(2, 3, 8, 8), "mask": torch.zeros(2, 8, 8, dtype=torch.int64)}
    assert to_contract_dtypes(batch) is batch
    points = torch.rand(2, 5, 2)
    assert to_contract_dtypes(points) is points  # toy2d-like or plain tensor batches
    assert to_contract_dtypes({"points": points})["points"] is points
    # a converted batch is a new dict: the loader's batch is left as it was
    raw = {"image": torch.zeros(1, 3, 2, 2, dtype=torch.uint8), "num_objects": torch.ones(1)}
    out = to_contract_dtypes(raw)
    assert raw["image"].dtype == torch.uint8 and out["num_objects"] is raw["num_objects"]


def test_dtype_options_are_checked(stores: dict[str, Path]) -> None:
    path = open_store(stores["objects-room"]).path
    with pytest.raises(ValueError, match=r"image_dtype must be one of \['float32', 'uint8'\]"):
        StoreDataset(path, image_dtype="float16")
    with pytest.raises(ValueError, match=r"mask_dtype must be one of .*Did you mean 'uint8'"):
        StoreDataset(path, mask_dtype="unit8")
    with pytest.raises(ValueError, match=r"image_dtype must be one of"):
        StoreDataset(path).with_dtypes("int8")
    cfg = _cfg(stores)
    with pytest.raises(TypeError, match=r"uint8_transfer must be True or False; got 1"):
        build_split(cfg, "train", uint8_transfer=1)
    with pytest.raises(TypeError, match=r"uint8_transfer must be True or False"):
        build_datamodule(cfg, uint8_transfer="yes")
    assert "image uint8, mask uint8" in repr(StoreDataset(path).with_dtypes("uint8", "uint8"))


def _cfg(stores: dict[str, Path], **changes) -> DataConfig:
    opts = dict(
        name="objects-room",
        root=str(stores["objects-room"]),
        num_train=-1,
        num_val=3,
        num_test=2,
        image_size=16,
        batch_size=4,
    )
    return DataConfig(**(opts | changes))


def test_build_split_uint8_only_where_the_dataset_holds_bytes(stores: dict[str, Path]) -> None:
    cfg = _cfg(stores)
    for split in ("train", "val", "test"):
        plain, small = build_split(cfg, split), build_split(cfg, split, uint8_transfer=True)
        assert plain.image_dtype == "float32" and small.image_dtype == small.mask_dtype == "uint8"
        assert plain.indices.tolist() == small.indices.tolist()
    sprites = DataConfig(num_train=3, num_val=2, num_test=2, image_size=16, max_objects=2)
    item = build_split(sprites, "train", uint8_transfer=True)[0]  # rendered floats stay float
    assert item["image"].dtype == torch.float32 and item["mask"].dtype == torch.int64


def test_datamodule_ships_uint8_and_restores_the_float_batches(stores: dict[str, Path]) -> None:
    cfg = _cfg(stores)
    fast, plain = build_datamodule(cfg), build_datamodule(cfg, uint8_transfer=False)
    assert fast.uint8_transfer and not plain.uint8_transfer
    for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for raw, want in zip(getattr(fast, name)(), getattr(plain, name)()):
            assert raw["image"].dtype == torch.uint8 and raw["mask"].dtype == torch.uint8
            assert want["image"].dtype == torch.float32
            got = fast.on_after_batch_transfer(raw, 0)
            assert got.keys() == want.keys()
            for key in want:
                assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
            assert float(got["image"].min()) >= 0.0 and float(got["image"].max()) <= 1.0
    # the float DataModule's hook leaves its batches alone
    batch = next(iter(plain.val_dataloader()))
    assert plain.on_after_batch_transfer(batch, 0) is batch


@pytest.mark.slow
def test_uint8_batches_from_two_workers_equal_the_main_process(stores: dict[str, Path]) -> None:
    ds = build_split(_cfg(stores), "train", uint8_transfer=True)
    plain = build_split(_cfg(stores), "train")
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    seen = 0
    for i, batch in enumerate(loader):
        positions = np.arange(3 * i, min(3 * i + 3, len(ds)))
        want = collate(plain.__getitems__(positions.tolist()))
        got = to_contract_dtypes(batch)
        assert batch["image"].dtype == torch.uint8
        assert all(torch.equal(got[k], want[k]) for k in want)
        seen += len(positions)
    assert seen == len(ds) == 6
