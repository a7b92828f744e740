"""Shared fixtures for the training tests: a tiny, fast run configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY = {
    "data": {
        "name": "sprites",
        "num_train": 24,
        "num_val": 6,
        "num_test": 6,
        "image_size": 16,
        "max_objects": 2,
        "batch_size": 3,
    },
    "model": {
        "preset": "PSA",
        "likelihood": "mse",
        "image_size": 16,
        "num_slots": 3,
        "slot_dim": 8,
        "iters": 2,
        "encoder_kwargs": {"channels": [5, 7], "kernel_sizes": [3, 3], "strides": [1, 2]},
        "decoder_kwargs": {"channels": [5, 7], "init_size": 8, "kernel_size": 3},
    },
    "optim": {"lr": 0.001, "warmup_steps": 2, "ema_decay": 0.9},
    "trainer": {
        "max_steps": 3,
        "val_every": 2,
        "panel_every": 2,
        "log_every": 1,
        "run_name": "tiny",
    },
}


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    """A YAML config of a tiny PSA run whose output directory is inside `tmp_path`."""
    data = {**TINY, "trainer": {**TINY["trainer"], "output_dir": str(tmp_path / "runs")}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
