"""Every real-image config trains a few steps and evaluates, on fixtures with a tiny ViT (slow).

The configs (voc_dino_psa_mlp, voc_dino_sa_mlp, voc_dino_psa_transformer, coco_dinov2_psa_mlp)
keep their structure (dataset, grouping, decoder, feature target, optimiser); overrides shrink
the sizes and swap the ViT for a tiny random one saved in the published key layout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from probslot.cli import main
from probslot.config import load_config
from probslot.evaluation import EvalConfig, evaluate_run
from probslot.training import train
from real_image_fixtures import vit_overrides, write_coco, write_vit, write_voc

CONFIGS = ["voc_dino_psa_mlp", "voc_dino_sa_mlp", "voc_dino_psa_transformer", "coco_dinov2_psa_mlp"]


def tiny_overrides(name: str, tmp_path: Path) -> list[str]:
    v2 = "dinov2" in name
    root = tmp_path / ("coco" if name.startswith("coco") else "VOC2012")
    if name.startswith("coco"):
        write_coco(root, splits=("train2017", "val2017"))
    else:
        write_voc(root)
    decoder = (
        ["model.decoder_kwargs.dim=8", "model.decoder_kwargs.depth=1", "model.decoder_kwargs.heads=2",
         "model.decoder_kwargs.mlp_ratio=2"]
        if "transformer" in name
        else ["model.decoder_kwargs.hidden=[16]"]
    )  # fmt: skip
    grouping = ["model.grouping_kwargs.mlp_hidden=16"] if "_sa_" in name else []
    return [
        *vit_overrides(write_vit(tmp_path / "vit.pth", v2=v2), v2=v2),
        *decoder,
        *grouping,
        "model.image_size=16", "model.slot_dim=8", "model.token_mlp=16", "model.num_slots=3",
        f"data.root={root}", "data.image_size=16", "data.num_train=2", "data.num_val=2", "data.num_test=2",
        "data.batch_size=2", "data.num_workers=0",
        "trainer.max_steps=2", "trainer.val_every=2", "trainer.panel_every=2", "trainer.log_every=1",
        "trainer.precision=32", "trainer.accelerator=cpu", "trainer.devices=1",
        f"trainer.output_dir={tmp_path / 'runs'}",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_real_image_config_trains_and_evaluates(name, tmp_path):
    cfg = load_config(name, tiny_overrides(name, tmp_path))
    assert cfg.model.target == "features"
    result = train(cfg, progress=False)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 2 and math.isfinite(metrics["nll"]) and math.isfinite(metrics["mse"])
    assert (result.run_dir / "panels" / "step_0000002.png").is_file()
    found = evaluate_run(result.run_dir, EvalConfig(split="val", progress=False))
    assert found.target == "features" and found.num_images == 2
    assert found.segmentation == {} and found.reconstruction is None  # no pixel figures
    objects = found.objects
    assert set(objects.segmentation) == {"decoder", "attention"}
    assert set(objects.scored_images) == {"mbo_i", "mbo_c", "fg_ari", "corloc"}
    for figures in objects.segmentation.values():
        assert 0.0 <= figures.mbo_i <= 1.0 and 0.0 <= figures.mbo_c <= 1.0
    on_disk = json.loads((result.run_dir / "eval.json").read_text())
    assert on_disk == found.to_dict() and on_disk["target"] == "features"
    assert set(on_disk["segmentation"]["decoder"]) == {"mbo_i", "mbo_c", "fg_ari", "corloc"}


@pytest.mark.slow
def test_training_reads_a_matching_feature_cache_and_refuses_another(tmp_path, capsys):
    name = "voc_dino_psa_mlp"
    overrides = tiny_overrides(name, tmp_path)
    cache = tmp_path / "features"
    assert (
        main(
            [
                "features",
                "extract",
                "--config",
                name,
                "--out",
                str(cache),
                "--no_progress",
                *overrides,
            ]
        )
        == 0
    )
    assert f"train with data.feature_cache={cache}" in capsys.readouterr().out
    assert main(["features", "info", "--cache", str(cache)]) == 0
    assert "train: 2 items, tokens [16, 12] float16" in capsys.readouterr().out
    cfg = load_config(name, [*overrides, f"data.feature_cache={cache}", "trainer.run_name=cached"])
    result = train(cfg, progress=False)
    assert json.loads((result.run_dir / "metrics.json").read_text())["steps"] == 2
    other = load_config(name, [*overrides, f"data.feature_cache={cache}", "model.encoder_kwargs.layer=1",
                               "trainer.run_name=other"])  # fmt: skip
    with pytest.raises(ValueError, match=r"holds tokens of vit, block 2, .*differ in layer"):
        train(other, progress=False)
    assert not (tmp_path / "runs" / "other" / "config.yaml").exists()  # refused before any work
