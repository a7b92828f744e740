"""The local store: it yields exactly the bytes its reader yields, resumes a killed conversion to
the same checksums, is never mistaken for finished while half-written, and feeds training
configs (subsets, crops, sizes, train/val/test cut from its end)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from format_fixtures import (
    encode_example,
    frame,
    write_clevr,
    write_clevrtex,
    write_deepmind,
    write_image_folder,
    write_ocl_h5,
    write_spriteworld,
    write_tfrecord,
)
from probslot import cli
from probslot.data import DataConfig, build_split, check_image_item, collate, convert, open_store
from probslot.data import store as store_module
from probslot.data.readers import READERS, DataFormatError
from probslot.data.store import StoreDataset, read_manifest, store_info
from probslot.data.transforms import crop_box


def _sources(tmp_path: Path) -> dict[str, tuple[Path, dict]]:
    """One small source per format: (path, reader options)."""
    out = {}
    for fmt, n in (
        ("clevr-with-masks", 3),
        ("objects-room", 9),
        ("multi-dsprites", 8),
        ("tetrominoes", 7),
    ):
        path, _ = write_deepmind(tmp_path / fmt, fmt, n, seed=2, hidden_object=True)
        out[fmt] = (path, {})
    out["ocl-h5"] = (write_ocl_h5(tmp_path / "ocl", "tetrominoes", n=6)[0].parent, {})
    out["clevr"] = (write_clevr(tmp_path / "clevr", n=3)[0], {})
    out["clevrtex"] = (write_clevrtex(tmp_path / "ctex", n=10)[0], {"split": "all"})
    out["spriteworld"] = (write_spriteworld(tmp_path / "sw", n=7)[0], {})
    out["image-folder"] = (write_image_folder(tmp_path / "pics", [(24, 24)] * 5)[0], {})
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    return _sources(tmp_path_factory.mktemp("sources"))


@pytest.mark.parametrize("fmt", sorted(READERS.available()))
def test_store_yields_exactly_the_readers_bytes(
    tmp_path: Path, sources: dict, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "_SHARD_BYTES", 60_000)  # several shards even for fixtures
    source, opts = sources[fmt]
    split_dir = convert(source, fmt, tmp_path / "store", progress=False, **opts)
    records = list(READERS.get(fmt)(source, **opts).records())
    ds = open_store(tmp_path / "store")
    manifest = ds.manifest
    assert manifest["count"] == len(ds) == len(records)
    assert manifest["format"] == fmt and split_dir.parent == tmp_path / "store"
    positions = np.arange(len(ds))[::-1]  # any order, across shards
    np.testing.assert_array_equal(
        ds.raw("image", positions), np.stack([records[i].image for i in positions])
    )
    np.testing.assert_array_equal(
        ds.raw("num_objects", positions), [records[i].num_objects for i in positions]
    )
    np.testing.assert_array_equal(
        ds.raw("latents", positions), np.stack([records[i].latents for i in positions])
    )
    np.testing.assert_array_equal(
        ds.raw("visibility", positions), np.stack([records[i].visibility for i in positions])
    )
    if manifest["has_masks"]:
        np.testing.assert_array_equal(
            ds.raw("mask", positions), np.stack([records[i].mask for i in positions])
        )
    # every shard file is what the manifest says, and so is every source file
    for shard in manifest["shards"]:
        for entry in shard["files"].values():
            data = (split_dir / entry["name"]).read_bytes()
            assert len(data) == entry["bytes"]
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    rows = manifest["sources"]
    if isinstance(rows, dict):  # many files: the list is in sources.tsv
        lines = (split_dir / rows["list"]).read_text().splitlines()
        rows = [dict(zip(("path", "bytes", "sha256"), line.split("\t"))) for line in lines]
    base = source if source.is_dir() else source.parent
    for row in rows:
        data = (base / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] and len(data) == int(row["bytes"])
    # items follow the contract and carry the stored bytes
    for i in (0, len(ds) - 1):
        item = ds[i]
        check_image_item(item, manifest["max_objects"], len(manifest["latent_names"]))
        stored = torch.from_numpy(records[i].image.copy()).permute(2, 0, 1)
        assert torch.equal(item["image"], stored.float() / 255)
        if manifest["has_masks"]:
            assert torch.equal(item["mask"], torch.from_numpy(records[i].mask).long())
        else:
            assert int(item["mask"].abs().sum()) == 0


def test_batches_equal_items_and_survive_workers(tmp_path: Path, sources: dict) -> None:
    source, _ = sources["objects-room"]
    convert(source, "objects-room", tmp_path / "s", progress=False)
    ds = open_store(tmp_path / "s")
    assert len(pickle.dumps(ds)) < 20_000  # memory maps are reopened per process, not pickled
    ds.raw("image", [0])  # opens a map; pickling still leaves it out
    assert len(pickle.dumps(ds)) < 20_000
    one_by_one = collate([ds[i] for i in [4, 1, 7]])
    batched = collate(ds.__getitems__([4, 1, 7]))
    for key in one_by_one:
        assert torch.equal(one_by_one[key], batched[key]), key
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate)
    in_workers = next(iter(loader))
    direct = collate(ds.__getitems__([0, 1, 2]))
    for key in direct:
        assert torch.equal(in_workers[key], direct[key]), key


def test_conversion_crop_and_size_equal_load_time_crop_and_size(tmp_path: Path) -> None:
    path, _ = write_deepmind(tmp_path / "src", "clevr-with-masks", 3, seed=9)
    convert(path, "clevr-with-masks", tmp_path / "native", progress=False)
    convert(
        path,
        "clevr-with-masks",
        tmp_path / "small",
        crop="slot-attention",
        image_size=24,
        progress=False,
    )
    native = open_store(tmp_path / "native")
    at_load = StoreDataset(native.path, box=crop_box("slot-attention", 240, 320), size=(24, 24))
    converted = open_store(tmp_path / "small")
    assert converted.manifest["image_shape"] == [24, 24, 3]
    for i in range(3):
        a, b = at_load[i], converted[i]
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), (i, key)
        # visibility follows the cropped mask, not the full frame's
        labels = set(np.unique(a["mask"].numpy())) - {0}
        assert set(np.flatnonzero(a["visibility"].numpy()) + 1) == labels
    cropped = StoreDataset(native.path, box=crop_box("slot-attention", 240, 320))
    full = native.raw("image", [1])[0]
    assert torch.equal(
        cropped[1]["image"], torch.from_numpy(full[29:221, 64:256]).permute(2, 0, 1).float() / 255
    )


def _store_config(root: Path, **changes) -> DataConfig:
    opts = dict(
        name="clevr-with-masks", root=str(root), num_train=-1, num_val=2, num_test=3, image_size=16
    )
    opts.update(changes)
    return DataConfig(**opts)


def test_build_split_cuts_val_and_test_from_the_end(tmp_path: Path) -> None:
    path, expected = write_deepmind(tmp_path / "src", "clevr-with-masks", 12, seed=1)
    convert(path, "clevr-with-masks", tmp_path / "s", progress=False)
    cfg = _store_config(tmp_path / "s")
    splits = {s: build_split(cfg, s) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [7, 2, 3]
    assert splits["train"].indices.tolist() == list(range(7))
    assert splits["val"].indices.tolist() == [7, 8] and splits["test"].indices.tolist() == [
        9,
        10,
        11,
    ]
    item = splits["test"][0]
    check_image_item(item, 10, 11)
    assert item["image"].shape == (3, 16, 16)  # slot-attention crop (the default), then 16×16
    assert item["num_objects"] == expected[9].num_objects
    # CLEVR6: only scenes with <= 6 objects, latent rows trimmed to 6
    nobj = np.array([e.num_objects for e in expected])
    six = build_split(
        _store_config(tmp_path / "s", num_val=1, num_test=1, dataset_kwargs={"subset": "clevr6"}),
        "train",
    )
    rows = np.flatnonzero(nobj <= 6)
    assert six.indices.tolist() == rows[:-2].tolist()
    assert six[0]["latents"].shape == (6, 11)
    ranged = build_split(
        _store_config(
            tmp_path / "s", num_val=0, num_test=0, dataset_kwargs={"object_range": [7, 10]}
        ),
        "train",
    )
    assert ranged.indices.tolist() == np.flatnonzero(nobj >= 7).tolist()
    with pytest.raises(ValueError, match=r"leaves 7 for training but data.num_train=50"):
        build_split(_store_config(tmp_path / "s", num_train=50), "train")


def test_build_split_uses_a_converted_split(tmp_path: Path) -> None:
    root, _ = write_clevr(tmp_path / "c", n=4)
    write_clevr(tmp_path / "c", n=3, split="val", seed=1)
    convert(root, "clevr", tmp_path / "s", progress=False)
    convert(root, "clevr", tmp_path / "s", split="val", progress=False)
    cfg = DataConfig(
        name="clevr", root=str(tmp_path / "s"), num_train=-1, num_val=3, num_test=1, image_size=16
    )
    assert len(build_split(cfg, "val")) == 3  # its own folder
    assert len(build_split(cfg, "train")) == 3  # 4 − the test item cut from its end
    assert build_split(cfg, "test").indices.tolist() == [3]
    with pytest.raises(ValueError, match=r"holds the splits train, val; choose one"):
        open_store(tmp_path / "s")
    assert len(open_store(tmp_path / "s", split="val")) == 3
    with pytest.raises(
        ValueError, match=r"has no split 'vall'\. Did you mean 'val'\? Splits: train, val"
    ):
        open_store(tmp_path / "s", split="vall")


def test_data_config_root_rules(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data.root is set but dataset 'sprites' reads no files"):
        DataConfig(name="sprites", root=str(tmp_path))
    with pytest.raises(TypeError, match=r"DataConfig.root must be a non-empty path string"):
        DataConfig(name="objects-room", root="")
    with pytest.raises(ValueError, match=r"data.max_objects does not filter a store.*subset"):
        DataConfig(name="objects-room", root=str(tmp_path), max_objects=6)
    with pytest.raises(
        ValueError, match=r"dataset_kwargs must not set 'split'; build_split chooses"
    ):
        DataConfig(name="objects-room", root=str(tmp_path), dataset_kwargs={"split": "val"})
    with pytest.raises(ValueError, match=r"no option 'subst'.*Did you mean 'subset'"):
        DataConfig(name="objects-room", root=str(tmp_path), dataset_kwargs={"subst": "clevr6"})
    with pytest.raises(ValueError, match=r"DataConfig.num_train must be an integer >= 1"):
        DataConfig(name="sprites", num_train=-1)
    cfg = DataConfig(
        name="objects-room"
    )  # loads without a root (a preset); building says what to do
    with pytest.raises(
        ValueError, match=r"reads a converted store: set data.root=DIR .*probslot data convert"
    ):
        build_split(cfg, "train")


def test_store_format_mismatch_and_bad_crop(tmp_path: Path, sources: dict) -> None:
    convert(sources["objects-room"][0], "objects-room", tmp_path / "s", progress=False)
    cfg = DataConfig(
        name="tetrominoes", root=str(tmp_path / "s"), num_train=-1, num_val=1, num_test=1
    )
    with pytest.raises(
        ValueError,
        match=r"was converted from 'objects-room', not 'tetrominoes': set data.name=objects-room",
    ):
        build_split(cfg, "train")
    cfg = DataConfig(
        name="objects-room",
        root=str(tmp_path / "s"),
        num_train=-1,
        num_val=1,
        num_test=1,
        dataset_kwargs={"crop": "slot-attention"},
    )
    with pytest.raises(
        ValueError,
        match=r"crop 'slot-attention' .* is defined on CLEVR's 240×320 frames; got 64×64",
    ):
        build_split(cfg, "train")
    convert(
        sources["objects-room"][0], "objects-room", tmp_path / "c", image_size=32, progress=False
    )
    cfg = DataConfig(
        name="objects-room",
        root=str(tmp_path / "c"),
        num_train=-1,
        num_val=1,
        num_test=1,
        dataset_kwargs={"crop": "center-32"},
    )
    with pytest.raises(
        ValueError, match=r"converted with --crop none --image-size 32, so it cannot be cropped"
    ):
        build_split(cfg, "train")


def test_finished_store_is_kept_replaced_or_refused(tmp_path: Path, sources: dict, capsys) -> None:
    source = sources["tetrominoes"][0]
    first = convert(source, "tetrominoes", tmp_path / "s", progress=False)
    before = (first / "manifest.json").read_text()
    convert(source, "tetrominoes", tmp_path / "s")  # same settings: nothing to do
    assert "already converted" in capsys.readouterr().out
    assert (first / "manifest.json").read_text() == before
    with pytest.raises(
        FileExistsError, match=r"other settings \(limit None → 3\); pass --overwrite"
    ):
        convert(source, "tetrominoes", tmp_path / "s", limit=3, progress=False)
    convert(source, "tetrominoes", tmp_path / "s", limit=3, overwrite=True, progress=False)
    assert read_manifest(first)["count"] == 3


def test_unfinished_and_newer_stores_are_refused(tmp_path: Path, sources: dict) -> None:
    split_dir = convert(sources["tetrominoes"][0], "tetrominoes", tmp_path / "s", progress=False)
    manifest = json.loads((split_dir / "manifest.json").read_text())
    for key, message in (
        ("reader_version", r"tetrominoes reader version 99, newer than this probslot's"),
        ("probslot_store", r"store layout version 99; this probslot reads up to 1"),
    ):
        changed = {**manifest, key: 99}
        (split_dir / "manifest.json").write_text(json.dumps(changed))
        with pytest.raises(ValueError, match=message):
            open_store(tmp_path / "s")
    (split_dir / "manifest.json").unlink()
    (split_dir / ".convert.json").write_text(
        json.dumps({"settings": manifest["settings"], "count": 3, "shards": []})
    )
    with pytest.raises(
        ValueError,
        match=r"is an unfinished conversion \(3 records so far, not a finished store\); run `probslot data convert",
    ):
        open_store(tmp_path / "s")
    with pytest.raises(FileNotFoundError, match=r"holds no probslot store"):
        open_store(tmp_path / "s" / "..")
    with pytest.raises(FileNotFoundError, match=r"store .*missing.* does not exist"):
        open_store(tmp_path / "missing")


def test_empty_source_and_mixed_sizes(tmp_path: Path) -> None:
    empty = write_tfrecord(tmp_path / "tetrominoes_train.tfrecords", [])
    with pytest.raises(
        DataFormatError,
        match=r"tetrominoes_train\.tfrecords: the tetrominoes source holds no records \(empty source\)",
    ):
        convert(empty, "tetrominoes", tmp_path / "s", progress=False)
    assert not (tmp_path / "s" / "train").exists()  # nothing half-made is left behind
    root, _ = write_image_folder(tmp_path / "pics", [(20, 30), (20, 30), (25, 25)])
    with pytest.raises(
        DataFormatError,
        match=r"img_002\.png: the image is \(25, 25, 3\); expected \(20, 30, 3\) .* Pass --image-size",
    ):
        convert(root, "image-folder", tmp_path / "p", progress=False)
    ds = open_store(
        convert(
            root,
            "image-folder",
            tmp_path / "q",
            crop="center",
            image_size=16,
            progress=False,
            overwrite=True,
        )
    )
    assert len(ds) == 3 and ds[2]["image"].shape == (3, 16, 16)


def test_bad_record_in_the_middle_names_it(tmp_path: Path) -> None:
    path, _ = write_deepmind(tmp_path / "src", "tetrominoes", 4)
    good = gzip.decompress(path.read_bytes())
    bad = frame(encode_example({"image": ("bytes", np.zeros((35, 35, 3), np.uint8))}))
    path.write_bytes(gzip.compress(good + bad))
    with pytest.raises(
        DataFormatError, match=r"tetrominoes_train\.tfrecords: record 4: no feature 'mask'"
    ):
        convert(path, "tetrominoes", tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match=r"unfinished conversion"):  # never taken for finished
        open_store(tmp_path / "s")


_KILLABLE = textwrap.dedent(
    """
    import sys, time
    from probslot.data import store
    store._SHARD_BYTES = 30_000  # one record per shard
    write = store._write_shard
    def slow(*args):
        out = write(*args)
        time.sleep(0.25)
        return out
    store._write_shard = slow
    store.convert(sys.argv[1], "objects-room", sys.argv[2], progress=False)
    """
)


def test_killed_conversion_resumes_to_the_same_checksums(tmp_path: Path, monkeypatch) -> None:
    path, _ = write_deepmind(tmp_path / "src", "objects-room", 12, seed=4)
    monkeypatch.setattr(store_module, "_SHARD_BYTES", 30_000)
    whole = convert(path, "objects-room", tmp_path / "whole", progress=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, str(path), str(tmp_path / "killed")], env=env
    )
    state = tmp_path / "killed" / "train" / ".convert.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if state.exists() and len(json.loads(state.read_text())["shards"]) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(json.loads(state.read_text())["shards"])
    assert 3 <= done < 12 and not (tmp_path / "killed" / "train" / "manifest.json").exists()
    with pytest.raises(ValueError, match=r"unfinished conversion"):
        open_store(tmp_path / "killed")
    (state.parent / ".image-00099.npy.abc.tmp.npy").write_bytes(b"half")  # a write cut short
    resumed = convert(path, "objects-room", tmp_path / "killed", progress=False)
    a, b = read_manifest(whole), read_manifest(resumed)
    assert (
        a["shards"] == b["shards"]
        and a["sources"] == b["sources"]
        and a["count"] == b["count"] == 12
    )
    assert sorted(p.name for p in whole.iterdir()) == sorted(p.name for p in resumed.iterdir())


def test_store_info_and_cli(tmp_path: Path, sources: dict, capsys) -> None:
    source = sources["multi-dsprites"][0]
    assert (
        cli.main(
            [
                "data",
                "convert",
                str(source),
                "--format",
                "multi-dsprites",
                "--out",
                str(tmp_path / "s"),
                "--no_progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"store written to {tmp_path / 's' / 'train'} (8 records" in out
    assert "probslot train --config multi_dsprites" in out
    text = store_info(tmp_path / "s")
    m = read_manifest(tmp_path / "s" / "train")
    for k, count in m["statistics"]["num_objects"].items():
        assert f"{int(k):>3}  {count:>9}" in text
    assert "multi-dsprites (reader v1, store layout v1), variant colored_on_grayscale" in text
    assert cli.main(["data", "info", str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.strip() == text
    assert (
        cli.main(
            [
                "data",
                "convert",
                str(source),
                "--format",
                "multi-dsprite",
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith(
        "probslot: error: unknown format 'multi-dsprite'. Did you mean 'multi-dsprites'?"
    )
    assert cli.main(["data", "info", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
