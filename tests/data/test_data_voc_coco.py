"""Pascal VOC 2012 and COCO 2017 readers on fixtures written here in the published layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probslot.data import DATASETS, DataConfig, build_split, check_image_item, collate
from probslot.data.coco import COCODataset
from probslot.data.voc import VOCDataset
from real_image_fixtures import H, W, box, write_coco, write_voc


def test_voc_items_follow_the_published_masks(tmp_path):
    decoded = write_voc(tmp_path)
    data = VOCDataset(root=str(tmp_path), split="val", image_size=H)
    assert len(data) == 2 and DATASETS.get("voc") is VOCDataset
    item = data[0]
    check_image_item(item, max_objects=64, num_latents=1)
    crop = (slice(0, H), slice(4, 24))
    torch.testing.assert_close(
        item["image"], torch.from_numpy(decoded["2007_000001"][crop]).permute(2, 0, 1) / 255.0
    )
    # instances renumbered in order of their file ids: cat (1) → 1, person (3) → 2; the dog is cut
    assert item["num_objects"] == 2
    assert item["labels"][:3].tolist() == [8, 15, 0] and item["latents"][:2, 0].tolist() == [
        8.0,
        15.0,
    ]
    expected = np.zeros((H, W), np.int64)
    expected[2:8, 5:12], expected[10:18, 14:22] = 2, 1
    assert torch.equal(item["mask"], torch.from_numpy(expected[crop]))
    ignore = np.zeros((H, W), bool)
    ignore[9, 5:22] = True
    assert torch.equal(item["ignore"], torch.from_numpy(ignore[crop]))
    classes = np.zeros((H, W), np.int64)
    classes[2:8, 5:12], classes[10:18, 14:22] = 15, 8
    assert torch.equal(item["class_mask"], torch.from_numpy(classes[crop]))
    assert item["visibility"][:3].tolist() == [True, True, False]


def test_voc_images_without_objects_or_masks(tmp_path):
    write_voc(tmp_path)
    empty = VOCDataset(root=str(tmp_path), split="val", image_size=H)[1]
    assert empty["num_objects"] == 0 and not empty["mask"].any() and not empty["ignore"].any()
    train = VOCDataset(root=str(tmp_path), split="train", image_size=16)
    first = train[0]  # 2008_000003 has no SegmentationObject PNG
    assert first["image"].shape == (3, 16, 16) and first["num_objects"] == 0
    batch = collate([train[0], train[1]])
    assert batch["mask"].shape == (2, 16, 16) and batch["labels"].shape == (2, 64)


def test_voc_resizes_the_shorter_side_and_keeps_labels(tmp_path):
    write_voc(tmp_path)
    item = VOCDataset(root=str(tmp_path), split="val", image_size=10)[0]
    assert (
        item["image"].shape == (3, 10, 10) and 0 <= item["image"].min() <= item["image"].max() <= 1
    )
    assert set(item["mask"].unique().tolist()) == {0, 1, 2} and item["ignore"].any()


def test_voc_augmentation_is_seeded_and_not_cacheable(tmp_path):
    write_voc(tmp_path)
    a = VOCDataset(root=str(tmp_path), split="val", image_size=16, augment=True, seed=1)
    b = VOCDataset(root=str(tmp_path), split="val", image_size=16, augment=True, seed=1)
    assert torch.equal(a[0]["image"], b[0]["image"]) and not a.deterministic


def test_voc_through_a_data_config_gets_its_split(tmp_path):
    write_voc(tmp_path)
    cfg = DataConfig(
        name="voc", root=str(tmp_path), image_size=16, num_train=2, num_val=1, num_test=0
    )
    assert len(build_split(cfg, "train")) == 2 and build_split(cfg, "train").ids[0] == "2008_000003"
    assert build_split(cfg, "val").ids == ["2007_000001"]
    with pytest.raises(ValueError, match=r"dataset_kwargs must not set 'split'"):
        DataConfig(name="voc", root=str(tmp_path), dataset_kwargs={"split": "val"})


def test_voc_errors_name_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is not a VOC2012 folder \(no JPEGImages/\)"):
        VOCDataset(root=str(tmp_path), split="val")
    write_voc(tmp_path)
    (tmp_path / "ImageSets" / "Segmentation" / "trainaug.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"trainaug\.txt' does not exist \(trainaug: the SBD "
                       r"train_aug\.txt list.*train_list to one of the lists in .*\(it has val\)"):  # fmt: skip
        VOCDataset(root=str(tmp_path), split="train")
    with pytest.raises(ValueError, match=r"lists 2 images but num_samples=5"):
        VOCDataset(num_samples=5, root=str(tmp_path), split="val")
    with pytest.raises(ValueError, match=r"the voc dataset needs root"):
        VOCDataset(split="val")


# --------------------------------------------------------------------------- COCO
def test_coco_crowd_and_overlaps_are_ignored(tmp_path):
    pytest.importorskip("pycocotools")
    write_coco(tmp_path)
    data = COCODataset(root=str(tmp_path), split="val", image_size=H)
    assert len(data) == 3 and data.classes == ("person", "car", "toothbrush")
    item = data[0]
    check_image_item(item, max_objects=100, num_latents=1)
    crop = (slice(0, H), slice(4, 24))
    a, b, crowd = box(2, 10, 5, 14), box(6, 16, 10, 20), box(14, 20, 4, 9)
    ignore = crowd | (a & b)
    assert torch.equal(item["ignore"], torch.from_numpy(ignore[crop]))
    expected = np.where(ignore, 0, np.where(b, 2, np.where(a, 1, 0)))
    assert torch.equal(item["mask"], torch.from_numpy(expected[crop]))
    assert item["num_objects"] == 2 and item["labels"][:3].tolist() == [3, 2, 0]  # 90 → 3, 3 → 2
    classes = np.where(ignore, 0, np.where(b, 2, np.where(a, 3, 0)))
    assert torch.equal(item["class_mask"], torch.from_numpy(classes[crop]))


def test_coco_polygons_and_images_without_objects(tmp_path):
    pytest.importorskip("pycocotools")
    write_coco(tmp_path)
    data = COCODataset(root=str(tmp_path), split="val", image_size=H)
    poly = data[1]
    assert poly["num_objects"] == 1 and poly["labels"][0] == 1
    ys, xs = torch.nonzero(poly["mask"], as_tuple=True)
    assert (
        ys.min() >= 4 and ys.max() <= 12 and xs.min() >= 12 and xs.max() <= 19
    )  # x shifted by the crop
    assert 40 <= int((poly["mask"] > 0).sum()) <= 72  # the 7 × 8 polygon, boundary pixels aside
    empty = data[2]
    assert empty["num_objects"] == 0 and not empty["mask"].any() and not empty["ignore"].any()
    assert len(COCODataset(root=str(tmp_path), split="val", skip_empty=True)) == 2


def test_coco_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json' does not exist; unpack "
                       r"annotations_trainval2017\.zip"):  # fmt: skip
        COCODataset(root=str(tmp_path), split="val")
    with pytest.raises(ValueError, match=r"the coco dataset needs root"):
        COCODataset(split="val")
