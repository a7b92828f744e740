"""Fixtures for the evaluation and report tests: tiny run directories without a training loop.

`make_run` writes what `probslot train` leaves behind (config.yaml, model.safetensors,
metrics.json, logs/csv/metrics.csv) for a tiny PSA model with its initial weights, so evaluation,
comparison and reports can be tested in about a second. The end-to-end tests that train with the
real training API are marked ``slow``. `evaluated` and `compared` are one full evaluation and one
comparison of such runs, shared by the tests of their figures and of their typed results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from probslot.evaluation import Comparison, EvalResult
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


class MeanColour:
    """A tiny self-contained feature extractor for FID/KID: per-channel means and stds (6-d)."""

    num_features = 6

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([images.mean((2, 3)), images.std((2, 3))], 1).double()


@pytest.fixture(scope="session")
def evaluated(psa_run: Path) -> EvalResult:
    """`evaluate_run` of `psa_run` with every section: an aggregate posterior (fitted on the
    train split) for samples, `MeanColour` for FID/KID."""
    from probslot.config import load_config
    from probslot.evaluation import EvalConfig, evaluate_run
    from probslot.io import load_model
    from probslot.posterior import AggregatePosterior
    from probslot.runs import load_split

    train = load_split(load_config(psa_run / "config.yaml"), "train")
    images = torch.stack([train[i]["image"] for i in range(len(train))])
    q = AggregatePosterior.fit(load_model(psa_run), [images], progress=False)
    q.save(psa_run / "posterior.safetensors")
    cfg = EvalConfig(progress=False, contrast_images=2, num_panels=3, posterior_samples=10)
    return evaluate_run(psa_run, cfg, extractor=MeanColour())


@pytest.fixture(scope="session")
def three_runs(run_factory) -> list[Path]:
    a = run_factory("cmp_s0", seed=0)
    b = run_factory("cmp_s1", seed=1)
    # same weights as run a under another seed/name: its slots equal run a's exactly
    c = run_factory("cmp_s2", seed=2, weights_from=a)
    return [a, b, c]


@pytest.fixture(scope="session")
def compared(three_runs: list[Path], tmp_path_factory) -> tuple[Comparison, Path]:
    """`compare_runs` of `three_runs` (PSA: with posterior agreement) and its output folder."""
    from probslot.evaluation import CompareConfig, compare_runs

    out = tmp_path_factory.mktemp("compare")
    return compare_runs(three_runs, out, CompareConfig(progress=False, posterior_samples=200)), out


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
