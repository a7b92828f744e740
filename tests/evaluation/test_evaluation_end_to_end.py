"""End to end: train two tiny runs with the training API, then evaluate → compare → report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tiny_runs import tiny_config

TINY_TRAIN = tiny_config(
    {
        "data": {"num_train": 12, "num_val": 3, "num_test": 17, "batch_size": 3},
        "optim": {"warmup_steps": 1},
        "trainer": {"max_steps": 2},
    }
)


@pytest.mark.slow
def test_train_evaluate_compare_report(tmp_path: Path, capsys) -> None:
    from probslot.cli import main
    from probslot.config import RunConfig
    from probslot.training.run import train

    runs = []
    for seed in (0, 1):
        data = copy.deepcopy(TINY_TRAIN)
        data["trainer"].update(seed=seed, run_name=f"seed{seed}", output_dir=str(tmp_path))
        runs.append(train(RunConfig.from_dict(data), progress=False).run_dir)
    assert main(["aggregate", "--run_dir", str(runs[0]), "--no_progress"]) == 0
    for run in runs:
        assert main(["evaluate", "--run_dir", str(run), "--no_progress"]) == 0
        ev = json.loads((run / "eval.json").read_text())
        assert ev["num_images"] == 17 and 0 <= ev["segmentation"]["decoder"]["fg_ari"] <= 1
    assert "samples" in json.loads((runs[0] / "eval.json").read_text())["figures"]
    listing = "[" + ", ".join(str(r) for r in runs) + "]"
    cmp_dir = tmp_path / "compare"
    assert main(["compare", "--run_dirs", listing, "--out", str(cmp_dir), "--no_progress"]) == 0
    res = json.loads((cmp_dir / "compare.json").read_text())
    assert res["matrices"]["smcc"][0][0] == pytest.approx(1.0, abs=1e-6)
    out = tmp_path / "report.html"
    assert (
        main(["report", "--run_dirs", listing, "--out", str(out), "--compare", str(cmp_dir)]) == 0
    )
    text = out.read_text()
    from probslot.reports.html import SECTION_KINDS

    assert text.count('data-section="') == 2 * len(SECTION_KINDS) + 1  # per run + comparison
    assert "training curves" in text
    assert capsys.readouterr().out.rstrip().endswith(f"summary written to {out.with_suffix('.md')}")
