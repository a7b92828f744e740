"""Fixtures for the evaluation and report tests: tiny run directories without a training loop.

`make_run` writes what `probslot train` leaves behind (config.yaml, model.safetensors,
metrics.json, logs/csv/metrics.csv) for a tiny PSA model with its initial weights, so evaluation,
comparison and reports can be tested in about a second. The end-to-end tests that train with the
real training API are marked ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tiny_runs import deep_merge as _merge  # noqa: E402
from tiny_runs import tiny_config  # noqa: E402

TINY_RUN: dict[str, Any] = tiny_config()


def make_run(
    root: Path,
    name: str,
    seed: int = 0,
    changes: dict[str, Any] | None = None,
    weights_from: Path | None = None,
) -> Path:
    """Write a run directory `root/name` of an untrained tiny model (weights seeded by `seed`,
    or copied from the run `weights_from`)."""
    from probslot.atomic import atomic_write_text
    from probslot.config import RunConfig, dump_config
    from probslot.io import RunPaths, save_model_weights, write_metrics
    from probslot.models import build_model

    data = _merge(TINY_RUN, changes or {})
    data = _merge(
        data,
        {"trainer": {"seed": seed, "run_name": name, "output_dir": str(root)}},
    )
    cfg = RunConfig.from_dict(data)
    paths = RunPaths(root / name)
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(paths.config, dump_config(cfg))
    if weights_from is not None:
        (paths.weights).write_bytes((weights_from / "model.safetensors").read_bytes())
    else:
        torch.manual_seed(seed)
        save_model_weights(build_model(cfg.model), paths.weights)
    write_metrics(paths.metrics, {"fg_ari": 0.25, "mse": 0.05, "steps": 3})
    csv_dir = paths.logs / "csv"
    csv_dir.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,step,train/loss,train/lr,val/fg_ari,val/mse"]
    rows += [f"0,{s},{1.0 / (s + 1):.4f},0.001,," for s in range(5)]
    rows += ["0,4,,,0.3,0.04"]
    (csv_dir / "metrics.csv").write_text("\n".join(rows) + "\n")
    return paths.root


@pytest.fixture(scope="session")
def run_factory(tmp_path_factory: pytest.TempPathFactory):
    """`make_run` into a session temporary directory."""
    root = tmp_path_factory.mktemp("runs")

    def factory(name: str, **kwargs: Any) -> Path:
        return make_run(root, name, **kwargs)

    return factory


@pytest.fixture(scope="session")
def psa_run(run_factory) -> Path:
    return run_factory("psa0", seed=0)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
