"""Report tests reuse the run-directory factory of ``tests/evaluation/conftest.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

_spec = importlib.util.spec_from_file_location(
    "_probslot_evaluation_fixtures", Path(__file__).parents[1] / "evaluation" / "conftest.py"
)
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
make_run = _fixtures.make_run


def write_panel(run: Path, step: int) -> Path:
    """The training panel `PanelCallback` writes at `step`, from the run's weights."""
    import torch

    from probslot.data.config import build_split
    from probslot.data.contract import collate
    from probslot.io import load_model, load_run_config
    from probslot.reports.figures import write_training_panel

    model = load_model(run).eval()
    split = build_split(load_run_config(run).data, "val")
    images = collate([split[i] for i in range(2)])["image"]
    with torch.no_grad():
        out = model(images)
    return write_training_panel(images, out, step, run / "panels" / f"step_{step:07d}.png")


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two runs of one config, the first fully processed (aggregate, prune, evaluate), plus a
    comparison; the second has only what training leaves."""
    from probslot.evaluation import CompareConfig, EvalConfig, compare_runs, evaluate_run
    from probslot.posterior.commands import aggregate, prune

    root = tmp_path_factory.mktemp("report_runs")
    full = make_run(root, "full", seed=0)
    bare = make_run(root, "bare", seed=1)
    aggregate(str(full), progress=False)
    prune(str(full), sweep=True, progress=False)
    evaluate_run(full, EvalConfig(progress=False, contrast_images=1, num_panels=3))
    write_panel(full, step=3)
    write_panel(full, step=7)
    # a log with wall-clock time over two sessions (the clock restarts on resume)
    rows = ["epoch,step,train/loss,train/lr,val/fg_ari,val/mse,val/minutes"]
    rows += [f"0,{s},{1.0 / (s + 1):.4f},0.001,,," for s in range(8)]
    rows += ["0,3,,,0.3,0.04,0.5", "0,7,,,0.4,0.03,0.25"]
    (full / "logs" / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
    cmp_dir = root / "compare"
    compare_runs([full, bare], cmp_dir, CompareConfig(progress=False, posterior_samples=100))
    return {"root": root, "full": full, "bare": bare, "compare": cmp_dir}
