"""`probslot.runs`: one data selection (split, max_images, data.* overrides) for every analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evaluation.conftest import make_run  # noqa: E402
from probslot.cli import main
from probslot.runs import load_split, run_config, split_loader, with_data_overrides


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), "sel", changes={"model": {"num_slots": 3}})


def test_the_split_is_the_one_training_built(run):
    from probslot.data.config import build_split

    cfg = run_config(run)
    ds, ref = load_split(run, "test"), build_split(cfg.data, "test")
    assert len(ds) == len(ref) == cfg.data.num_test
    assert torch.equal(ds[3]["image"], ref[3]["image"]) and torch.equal(
        ds[3]["mask"], ref[3]["mask"]
    )


def test_data_overrides_change_the_images_and_nothing_else(run):
    more = run_config(run, ["data.num_test=31", "data.dataset_kwargs.min_distance=0.3"])
    assert more.data.num_test == 31 and more.data.dataset_kwargs == {"min_distance": 0.3}
    assert more.model == run_config(run).model
    ds = load_split(run, "test", ["data.num_test=31"])
    assert len(ds) == 31
    batches = list(
        split_loader(run, "test", batch_size=8, overrides=["data.num_test=31"], max_images=20)
    )
    assert [b["image"].shape[0] for b in batches] == [8, 8, 4]
    assert torch.equal(batches[0]["image"][2], ds[2]["image"])


def test_only_data_overrides_are_accepted(run):
    cfg = run_config(run)
    with pytest.raises(ValueError, match=r"data\.\* overrides only.*got 'model.num_slots=5'"):
        with_data_overrides(cfg, ["model.num_slots=5"])
    with pytest.raises(
        ValueError, match=r"unknown config key 'data.num_tset'. Did you mean 'data.num_test'"
    ):
        with_data_overrides(cfg, ["data.num_tset=5"])
    with pytest.raises(ValueError, match=r"max_images=99 asks for more images.*data.num_test=99"):
        split_loader(run, "test", max_images=99)
    with pytest.raises(ValueError, match=r"test split is empty.*data.num_test=N"):
        load_split(run, "test", ["data.num_test=0"])


def test_every_analysis_command_takes_the_same_selection(run):
    """evaluate, aggregate, prune take split, --max_images and bare data.* overrides."""
    common = ["--max_images", "26", "data.num_test=26", "--no_progress"]
    assert main(["evaluate", str(run), "--split", "test", *common]) == 0
    assert json.loads((run / "eval.json").read_text())["num_images"] == 26
    assert main(["prune", str(run), "--split", "test", *common]) == 0
    assert json.loads((run / "pruning.json").read_text())["num_images"] == 26
    assert main(["aggregate", str(run), "--split", "test", *common]) == 0
    assert main(["evaluate", str(run), "model.num_slots=4"]) == 2  # not a data override
