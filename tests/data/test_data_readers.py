"""Every reader yields exactly what its fixture files hold, and bad input gets an error naming
the file, the record and what was expected.

The fixtures (`format_fixtures`) are written in each publisher's on-disk format by our own
writers; the expected records come from the scenes the fixtures were made of (the entity map
that painted the masks), not from the encoded bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from format_fixtures import (
    DEEPMIND,
    FILE_NAMES,
    Expected,
    encode_example,
    write_clevr,
    write_clevrtex,
    write_deepmind,
    write_image_folder,
    write_ocl_h5,
    write_spriteworld,
    write_tfrecord,
)
from probslot.data.readers import READERS, DataFormatError, Record


def assert_records(records: list[Record], expected: list[Expected]) -> None:
    assert len(records) == len(expected)
    for i, (rec, exp) in enumerate(zip(records, expected)):
        assert rec.image.dtype == np.uint8 and rec.image.shape[2] == 3, i
        assert rec.image.tobytes() == exp.image.tobytes(), f"image bytes of record {i}"
        if exp.mask is None:
            assert rec.mask is None
        else:
            np.testing.assert_array_equal(rec.mask, exp.mask, err_msg=f"mask of record {i}")
        assert rec.num_objects == exp.num_objects, i
        assert rec.latents.dtype == np.float32
        np.testing.assert_array_equal(rec.latents, exp.latents, err_msg=f"latents of record {i}")
        np.testing.assert_array_equal(rec.visibility, exp.visibility, err_msg=f"vis of {i}")


DEEPMIND_CASES = [(fmt, key) for fmt, spec in DEEPMIND.items() for key in spec["entities"]]


@pytest.mark.parametrize(
    ("fmt", "key"), DEEPMIND_CASES, ids=[f"{f}-{k}" for f, k in DEEPMIND_CASES]
)
def test_deepmind_reader_yields_the_written_scenes(tmp_path: Path, fmt: str, key: str) -> None:
    n = 2 if fmt == "clevr-with-masks" else 6
    path, expected = write_deepmind(tmp_path, fmt, n, key, seed=7, hidden_object=True)
    option = {"variant": key} if fmt == "multi-dsprites" else {"split": key}
    reader = READERS.get(fmt)(path, **option)
    spec = DEEPMIND[fmt]
    assert reader.max_objects == spec["entities"][key] - spec["bg"]
    assert reader.image_hw == spec["hw"]
    assert_records(list(reader.records()), expected)
    # a folder works too, and the split/variant is found from the file name
    by_folder = READERS.get(fmt)(tmp_path, **option)
    assert by_folder.path == path
    assert_records(list(by_folder.records(start=1)), expected[1:])


def test_deepmind_file_name_tells_split_and_variant(tmp_path: Path) -> None:
    path, _ = write_deepmind(tmp_path / "a", "objects-room", 1, "six_objects")
    assert READERS.get("objects-room")(path).split == "six_objects"
    path, _ = write_deepmind(tmp_path / "b", "multi-dsprites", 1, "binarized")
    reader = READERS.get("multi-dsprites")(path)
    assert reader.variant == "binarized" and reader.max_objects == 3
    assert reader.latent_names[-1] == "color"  # one colour channel


def test_multi_dsprites_hidden_object_counts_but_is_not_visible(tmp_path: Path) -> None:
    path, expected = write_deepmind(tmp_path, "multi-dsprites", 1, hidden_object=True, seed=3)
    (rec,) = READERS.get("multi-dsprites")(path).records()
    exp = expected[0]
    assert rec.num_objects == exp.num_objects
    assert not exp.visibility.all() or exp.num_objects == 0
    assert np.count_nonzero(rec.visibility) == len(np.unique(rec.mask)) - (0 in rec.mask)


def test_multi_dsprites_mask_layout_matters(tmp_path: Path) -> None:
    """A [H, W, E, 1] mask read as [E, H, W, 1] gives other labels: the layout is honoured."""
    path, expected = write_deepmind(tmp_path, "multi-dsprites", 3, seed=11)
    reader = READERS.get("multi-dsprites")(path)
    reader.mask_layout = "EHW1"  # the trap
    wrong = list(reader.records())
    assert any(not np.array_equal(r.mask, e.mask) for r, e in zip(wrong, expected))


def test_objects_room_backgrounds_are_label_zero(tmp_path: Path) -> None:
    path, expected = write_deepmind(tmp_path, "objects-room", 4, seed=5)
    for rec in READERS.get("objects-room")(path).records():
        assert rec.mask.max() <= rec.num_objects <= 3  # the 4 background entities → 0


def test_deepmind_wrong_variant_names_file_record_and_shape(tmp_path: Path) -> None:
    path, _ = write_deepmind(tmp_path, "multi-dsprites", 2, "colored_on_colored")
    reader = READERS.get("multi-dsprites")(path, variant="colored_on_grayscale")
    with pytest.raises(
        DataFormatError,
        match=r"multi_dsprites_colored_on_colored\.tfrecords: record 0: feature 'mask' has 20480 "
        r"values; expected \[64, 64, 6, 1\] = 24576 \(variant 'colored_on_grayscale'",
    ):
        next(reader.records())


def test_deepmind_missing_feature_and_short_image(tmp_path: Path) -> None:
    image = np.zeros((35, 35, 3), np.uint8)
    path = write_tfrecord(
        tmp_path / "tetrominoes_train.tfrecords", [encode_example({"image": ("bytes", image)})]
    )
    with pytest.raises(
        DataFormatError, match=r"record 0: no feature 'mask' \(features present: image\)"
    ):
        next(READERS.get("tetrominoes")(path).records())
    path = write_tfrecord(
        tmp_path / "x" / "tetrominoes_train.tfrecords",
        [encode_example({"image": ("bytes", image[:30])})],
    )
    with pytest.raises(
        DataFormatError, match=r"record 0: feature 'image' has 3150 values; expected \[35, 35, 3\]"
    ):
        next(READERS.get("tetrominoes")(path).records())


def test_missing_source_and_missing_file_in_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"objects-room source .*nope.* does not exist"):
        READERS.get("objects-room")(tmp_path / "nope")
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(
        FileNotFoundError, match=r"no 'objects_room_train\.tfrecords' in .* holds: other\.txt"
    ):
        READERS.get("objects-room")(tmp_path)


def test_unknown_format_split_variant_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown format 'objects_room'\. Did you mean 'objects-room'"
    ):
        READERS.get("objects_room")
    path, _ = write_deepmind(tmp_path, "objects-room", 1)
    with pytest.raises(ValueError, match=r"no split 'six_object'\. Did you mean 'six_objects'"):
        READERS.get("objects-room")(path, split="six_object")
    with pytest.raises(ValueError, match=r"no variant 'binarised'\. Did you mean 'binarized'"):
        READERS.get("multi-dsprites")(path, variant="binarised")


def test_ocl_h5_reader(tmp_path: Path) -> None:
    path, expected = write_ocl_h5(tmp_path, "tetrominoes", n=300, hw=(35, 35), seed=4)
    reader = READERS.get("ocl-h5")(tmp_path)
    assert reader.variant == "tetrominoes" and reader.default_crop == "center-32"
    assert reader.latent_names == ("color_0", "color_1", "color_2", "shape", "x")
    assert len(reader) == 300
    assert_records(list(reader.records()), expected)  # crosses the 256-record read chunks
    assert_records(list(reader.records(start=257)), expected[257:])


def test_ocl_h5_objects_room_has_four_backgrounds(tmp_path: Path) -> None:
    _, expected = write_ocl_h5(tmp_path, "objects_room_train", n=5, hw=(16, 16), seed=1)
    reader = READERS.get("ocl-h5")(tmp_path / "objects_room_train-full.hdf5")
    assert reader.num_background == 4 and reader.max_objects == 3
    assert_records(list(reader.records()), expected)


def test_ocl_h5_errors(tmp_path: Path) -> None:
    import h5py

    path, _ = write_ocl_h5(tmp_path, "tetrominoes", n=3)
    meta = tmp_path / "tetrominoes-metadata.npy"
    saved = meta.read_bytes()
    meta.unlink()
    with pytest.raises(FileNotFoundError, match=r"ocl-h5 needs tetrominoes-metadata\.npy"):
        READERS.get("ocl-h5")(tmp_path)
    meta.write_bytes(saved)
    with h5py.File(path, "r+") as f:
        del f["mask"]
        f["mask"] = np.zeros((3, 30, 35, 1), np.uint8)
    with pytest.raises(
        DataFormatError,
        match=r"tetrominoes-full\.hdf5: 'mask' has shape \(3, 30, 35, 1\); expected \(3, 35, 35, 1\)",
    ):
        READERS.get("ocl-h5")(tmp_path)
    with h5py.File(path, "r+") as f:
        del f["mask"]
        f["mask"] = np.full((3, 35, 35, 1), 9, np.uint8)
    with pytest.raises(
        DataFormatError, match=r"record 0: mask labels lie in \[9, 9\]; expected 0\.\.3"
    ):
        next(READERS.get("ocl-h5")(tmp_path).records())
    (tmp_path / "mine-full.hdf5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"holds several datasets|not one of"):
        READERS.get("ocl-h5")(tmp_path / "mine-full.hdf5")


def test_clevr_reader(tmp_path: Path) -> None:
    root, expected = write_clevr(tmp_path, n=4, counts=[3, 10, 6, 7])
    reader = READERS.get("clevr")(tmp_path)  # the folder holding CLEVR_v1.0 works too
    assert reader.root == root and len(reader) == 4 and not reader.has_masks
    assert reader.latent_names[-4:] == ("size", "material", "shape", "color")
    assert_records(list(reader.records()), expected)  # scenes sorted by image_index
    files = reader.source_files(2)
    assert files[0].name == "CLEVR_train_scenes.json" and len(files) == 3


def test_clevr_errors(tmp_path: Path) -> None:
    root, _ = write_clevr(tmp_path, n=2)
    with pytest.raises(FileNotFoundError, match=r"CLEVR_val_scenes\.json' does not exist"):
        READERS.get("clevr")(root, split="val")
    with pytest.raises(ValueError, match=r"no split 'test'"):
        READERS.get("clevr")(root, split="test")
    from PIL import Image

    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(
        root / "images" / "train" / "CLEVR_train_000001.png"
    )
    with pytest.raises(
        DataFormatError,
        match=r"CLEVR_train_000001\.png: the image has shape \(100, 100\); expected 320×480",
    ):
        list(READERS.get("clevr")(root).records())
    scenes = json.loads((root / "scenes" / "CLEVR_train_scenes.json").read_text())
    scene = next(s for s in scenes["scenes"] if s["image_index"] == 0)
    scene["objects"][0]["color"] = "pink"
    (root / "scenes" / "CLEVR_train_scenes.json").write_text(json.dumps(scenes))
    with pytest.raises(
        DataFormatError,
        match=r"CLEVR_train_scenes\.json: record 0: CLEVR_train_000000\.png, object 0: color "
        r"'pink' is not one of gray",
    ):
        list(READERS.get("clevr")(root).records())


def test_clevrtex_reader_and_splits(tmp_path: Path) -> None:
    root, expected, categories = write_clevrtex(tmp_path, n=10)
    reader = READERS.get("clevrtex")(tmp_path, split="all")
    assert reader.info()["categories"] == categories
    assert_records(list(reader.records()), expected)
    sizes = {s: len(READERS.get("clevrtex")(root, split=s)) for s in ("test", "val", "train")}
    assert sizes == {"test": 1, "val": 1, "train": 8}  # int(0.1 n), int(0.2 n): the official cut
    train = READERS.get("clevrtex")(root)
    assert_records(list(train.records()), expected[2:])
    assert len(train.source_files(1)) == 3  # image, _flat mask, json


def test_clevrtex_errors(tmp_path: Path) -> None:
    root, _, _ = write_clevrtex(tmp_path, n=5)
    with pytest.raises(FileNotFoundError, match=r"no CLEVRTEX_camo_NNNNNN\.png images"):
        READERS.get("clevrtex")(tmp_path, variant="camo")
    flat = root / "0" / "CLEVRTEX_full_000002_flat.png"
    from PIL import Image

    Image.fromarray(np.full((240, 320), 11, np.uint8), mode="L").save(flat)
    with pytest.raises(
        DataFormatError,
        match=r"_000002_flat\.png: record 2: mask label 11 but the scene has \d+ objects",
    ):
        list(READERS.get("clevrtex")(root, split="all").records())
    (root / "1" / "CLEVRTEX_full_000004.png").unlink()
    (root / "0" / "CLEVRTEX_full_000001.png").unlink()
    with pytest.raises(
        DataFormatError, match=r"images 1 of CLEVRTEX_full_000000\.\.000003 are missing"
    ):
        READERS.get("clevrtex")(root)


@pytest.mark.parametrize("compressed", [False, True])
def test_spriteworld_reader(tmp_path: Path, compressed: bool) -> None:
    path, expected = write_spriteworld(tmp_path, n=9, max_objects=4, compressed=compressed)
    reader = READERS.get("spriteworld")(tmp_path)
    assert reader.latent_names == ("x", "y", "scale", "hue", "shape") and len(reader) == 9
    assert_records(list(reader.records()), expected)
    assert_records(list(reader.records(start=5)), expected[5:])


def test_spriteworld_errors(tmp_path: Path) -> None:
    path = tmp_path / "4_obj_sprites.npz"
    images = np.zeros((3, 64, 64, 3), np.uint8)
    np.savez(path, images, np.zeros((3, 4, 5), np.float32), np.array([1, 5, 2]))
    with pytest.raises(
        DataFormatError,
        match=r"4_obj_sprites\.npz: record 1: arr_2 = 5; expected an object count in 0\.\.4",
    ):
        READERS.get("spriteworld")(path)
    np.savez(path, images, np.zeros((3, 4, 6), np.float32), np.array([1, 2, 2]))
    with pytest.raises(
        DataFormatError, match=r"arr_1 has shape \(3, 4, 6\); expected \(3, max_objects, 5\)"
    ):
        READERS.get("spriteworld")(path)
    np.savez(path, images)
    with pytest.raises(DataFormatError, match=r"no array 'arr_1'"):
        READERS.get("spriteworld")(path)


def test_image_folder_reader(tmp_path: Path) -> None:
    root, images = write_image_folder(tmp_path / "pics", [(20, 30), (20, 30), (20, 30)])
    reader = READERS.get("image-folder")(root)
    records = list(reader.records())
    assert [r.image.tobytes() for r in records] == [i.tobytes() for i in images]
    assert all(r.num_objects == 0 and r.latents.shape == (0, 0) for r in records)
    (root / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has the split folders train but no 'val'"):
        READERS.get("image-folder")(root, split="val")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataFormatError, match=r"empty: no images \(looked for \.png"):
        READERS.get("image-folder")(empty)


def test_every_format_has_a_reader_test() -> None:
    covered = {*DEEPMIND, "ocl-h5", "clevr", "clevrtex", "spriteworld", "image-folder"}
    assert set(READERS.available()) - covered == set(), "a registered format without fixtures"
    assert set(FILE_NAMES) >= {(f, k) for f, k in DEEPMIND_CASES}


def test_ocl_metadata_is_read_without_running_code_from_it(tmp_path):
    """`{name}-metadata.npy` is a pickle: only plain values and NumPy arrays are unpickled."""
    import os
    import pickle

    import numpy as np

    from probslot.data.readers.ocl_h5 import _load_metadata_npy

    meta = {"dataset": {"num_samples": 3}, "shape": (3, 8, 8), "ids": np.arange(4)}
    np.save(tmp_path / "ok.npy", np.array(meta, dtype=object), allow_pickle=True)
    got = _load_metadata_npy(tmp_path / "ok.npy")
    assert got["dataset"] == {"num_samples": 3} and np.array_equal(got["ids"], np.arange(4))

    ran = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {ran}",))

    np.save(tmp_path / "evil.npy", np.array({"x": Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError, match="not a plain value or NumPy array"):
        _load_metadata_npy(tmp_path / "evil.npy")
    assert not ran.exists()


def test_an_empty_tfrecord_file_is_an_error_not_an_empty_dataset(tmp_path):
    path = tmp_path / "tetrominoes_train.tfrecords"
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"tetrominoes_train.tfrecords.*empty \(0 bytes\)"):
        list(READERS.get("tetrominoes")(path).records())
