"""The main job end to end at a tiny size: train → posterior → samples → pruning → eval → report."""

import json

import pytest

from probslot.cli import main


@pytest.mark.slow
def test_demo_writes_every_output(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--no_progress",
            "--posterior_images",
            "48",
            "trainer.max_steps=3",
            "trainer.val_every=2",
            "trainer.panel_every=2",
            "data.num_train=64",
            "data.num_val=16",
            "data.num_test=48",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for name in (
        "metrics.json",
        "model.safetensors",
        "posterior.safetensors",
        "samples.png",
        "pruning.json",
        "eval.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
        assert name in printed or name == "model.safetensors"
    metrics = json.loads((out / "eval.json").read_text())
    assert metrics  # evaluation produced figures
    html = (out / "report.html").read_text()
    assert "<img" in html and "data:image/png;base64" in html
