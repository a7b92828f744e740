"""A one-step training run of every preset in configs/ (slow: builds each full-size model)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

import probslot
from probslot.config import CONFIG_DIR, load_config
from probslot.training import train

# the real-image configs need their data and a ViT checkpoint: tests/training/test_training_real_images.py
# trains each of them on fixtures with a tiny ViT instead
REAL_IMAGES = {
    "voc_dino_psa_mlp",
    "voc_dino_sa_mlp",
    "voc_dino_psa_transformer",
    "coco_dinov2_psa_mlp",
}
# the benchmark configs (CLEVR6, Objects-Room, ...) read a converted store (data.root):
# tests/data/test_data_configs.py trains each of them one step on a converted fixture store
BUILT_IN_DATA = {"sprites", "toy2d"}
PRESETS = sorted(
    p.stem
    for p in CONFIG_DIR.glob("*.yaml")
    if p.stem not in REAL_IMAGES
    and (yaml.safe_load(p.read_text()).get("data") or {}).get("name", "sprites") in BUILT_IN_DATA
)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_one_step_run_of_preset(name: str, tmp_path: Path) -> None:
    cfg = load_config(
        name,
        [
            "data.num_train=4",
            "data.num_val=2",
            "data.num_test=2",
            "data.batch_size=2",
            "trainer.max_steps=1",
            "trainer.val_every=1",
            "trainer.panel_every=1",
            "trainer.max_minutes=0",
            "trainer.log_every=1",
            f"trainer.output_dir={tmp_path}",
        ],
    )
    result = train(cfg, progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 1
    assert math.isfinite(metrics["nll"]) and math.isfinite(metrics["mse"])
    assert (result.run_dir / "panels" / "step_0000001.png").is_file()
    model = probslot.load_model(result.run_dir)
    assert model.num_slots == cfg.model.num_slots
