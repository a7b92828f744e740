"""The paper-setting configs (configs/{clevr6,clevr6_128,objects_room,objects_room_32,
multi_dsprites,tetrominoes}_{sa,sa_noa,psa,psa_noa,psa_proj}.yaml) read converted stores and
train: every one takes one optimiser step on a store converted from fixture files (``slow``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from format_fixtures import write_deepmind
from probslot import cli
from probslot.config import CONFIG_DIR, load_config, preset_names
from probslot.data import convert

SETTINGS = (
    "clevr6",
    "clevr6_128",
    "objects_room",
    "objects_room_32",
    "multi_dsprites",
    "tetrominoes",
)
MODELS = ("sa", "sa_noa", "psa", "psa_noa", "psa_proj")
PAPER_CONFIGS = [f"{s}_{m}" for s in SETTINGS for m in MODELS]
#: format of each setting → (fixture scenes, conversion options as docs/data.md gives them)
STORES = {
    "clevr-with-masks": (16, {"crop": "slot-attention", "image_size": 128}),
    "objects-room": (10, {}),
    "multi-dsprites": (10, {}),
    "tetrominoes": (10, {}),
}


def test_every_paper_config_exists_and_names_its_store_format() -> None:
    assert set(PAPER_CONFIGS) <= set(preset_names())
    presets = {
        "sa": "SA",
        "sa_noa": "SA-NoA",
        "psa": "PSA",
        "psa_noa": "PSA-NoA",
        "psa_proj": "PSA-Proj",
    }
    for setting in SETTINGS:
        for model in MODELS:
            name = f"{setting}_{model}"
            cfg = load_config(name)
            text = (CONFIG_DIR / f"{name}.yaml").read_text()
            assert cfg.data.name in STORES and cfg.data.root is None, name
            assert cfg.model.preset == presets[model], name
            assert cfg.trainer.run_name == name
            assert f"probslot train --config {name} data.root=" in text, name
            assert "trainer.accelerator=gpu trainer.precision=bf16-mixed" in text, name
    assert load_config("clevr6_psa").data.dataset_kwargs == {
        "subset": "clevr6",
        "crop": "slot-attention",
    }
    assert load_config("clevr6_psa").model.num_slots == 7
    assert load_config("objects_room_32_psa").data.image_size == 32


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("paper_stores")
    out = {}
    for fmt, (n, options) in STORES.items():
        path, expected = write_deepmind(tmp / "src" / fmt, fmt, n, seed=3)
        if fmt == "clevr-with-masks":
            assert sum(e.num_objects <= 6 for e in expected) >= 6  # CLEVR6 leaves enough scenes
        convert(path, fmt, tmp / fmt, progress=False, **options)
        out[fmt] = tmp / fmt
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_trains_one_step_on_a_converted_store(
    name: str, stores: dict[str, Path], tmp_path: Path
) -> None:
    fmt = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["data"]["name"]
    overrides = [
        f"data.root={stores[fmt]}",
        "data.num_val=2",
        "data.num_test=2",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.max_steps=1",
        "trainer.val_every=1",
        "trainer.val_batches=1",
        "trainer.panel_every=0",
        "trainer.log_every=1",
        f"trainer.output_dir={tmp_path}",
    ]
    assert cli.main(["train", "--config", name, "--no_progress", *overrides]) == 0
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    assert metrics["steps"] == 1
    assert math.isfinite(metrics["mse"])
