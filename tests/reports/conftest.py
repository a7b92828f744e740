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
    cmp_dir = root / "compare"
    compare_runs([full, bare], cmp_dir, CompareConfig(progress=False, posterior_samples=100))
    return {"root": root, "full": full, "bare": bare, "compare": cmp_dir}
