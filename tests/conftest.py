"""Shared test settings: deterministic, single-threaded torch so tests are repeatable on 2 cores."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from tiny_runs import tiny_config  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    """A YAML config of a tiny PSA run whose output directory is inside `tmp_path`."""
    data = tiny_config(
        {
            "data": {"num_train": 24, "num_val": 6, "num_test": 6, "batch_size": 3},
            "model": {
                "slot_dim": 8,
                "encoder_kwargs": {"channels": [5, 7]},
                "decoder_kwargs": {"channels": [5, 7]},
            },
            "trainer": {"run_name": "tiny", "output_dir": str(tmp_path / "runs")},
        }
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
